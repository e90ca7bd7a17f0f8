"""Every served list goes back to Kafka as impression events, without ever slowing a request.

Why: the loop closes only if what the pods showed becomes the next training set, stamped with the
model version that ranked it. Requests hand a compact record to a bounded buffer and return; one
background thread expands records into EngagementEvents and produces them in batches. When Kafka
is slow or down the buffer fills and further lists are dropped and counted
(feedloop_impressions_dropped_total), never blocking or failing a request.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from feedloop.config import KafkaSettings, ServingSettings
from feedloop.events import SCHEMA_VERSION, format_ts, to_json
from feedloop.serving import metrics

log = logging.getLogger("feedloop.serving.impressions")


@dataclass(frozen=True)
class ServedList:
    """One ranked list as shown: items in display order (position = index + 1)."""

    request_id: str
    tenant_id: str
    user_id: str
    surface: str
    device: str
    query: str | None
    ts_ms: int
    model_version: str
    explore: bool
    item_ids: Sequence[str]
    author_ids: Sequence[str | None]

    def events(self) -> list[dict]:
        ts = format_ts(datetime.fromtimestamp(self.ts_ms / 1000, timezone.utc))
        base = {"event_ts": ts, "tenant_id": self.tenant_id, "user_id": self.user_id, "request_id": self.request_id,
                "surface": self.surface, "device": self.device, "query": self.query, "event_type": "impression",
                "dwell_ms": None, "schema_version": SCHEMA_VERSION, "explore": self.explore,
                "model_version": self.model_version}
        return [{**base, "event_id": event_id(self.request_id, pos, "impression"), "item_id": item,
                 "author_id": author or "unknown", "position": pos}
                for pos, (item, author) in enumerate(zip(self.item_ids, self.author_ids), start=1)]


def event_id(request_id: str, position: int, event_type: str) -> str:
    """The id scheme shared with the simulator: outcomes name the impression they follow."""
    return f"{request_id}-p{position:03d}-{event_type}"


class ImpressionLog:
    """A bounded buffer drained to Kafka by one daemon thread."""

    def __init__(self, kafka: KafkaSettings, cfg: ServingSettings):
        self.kafka, self.cfg = kafka, cfg
        self._queue: queue.Queue[ServedList] = queue.Queue()
        self._pending = 0                 # events buffered (lists vary in length)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._producer = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, served: ServedList) -> bool:
        """Queue a list for Kafka; False (and counted) if the buffer is full. Never blocks."""
        n = len(served.item_ids)
        with self._lock:
            if self._pending + n > self.cfg.impression_buffer:
                metrics.IMPRESSIONS_DROPPED.labels("buffer_full").inc(n)
                return False
            self._pending += n
        self._queue.put_nowait(served)
        return True

    def pending(self) -> int:
        return self._pending

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what is buffered (up to timeout), then close the producer."""
        self._stop.set()
        self._thread.join(timeout=timeout)
        if self._producer is not None:
            try:
                self._producer.close(timeout=min(timeout, 5))
            except Exception:  # noqa: BLE001 - shutting down
                pass

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self._stop.is_set():
                    return
                continue
            self._send(batch)

    def _take_batch(self) -> list[ServedList]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch, events = [first], len(first.item_ids)
        while events < self.cfg.impression_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            events += len(item.item_ids)
        return batch

    def _send(self, batch: list[ServedList]) -> None:
        n = sum(len(s.item_ids) for s in batch)
        try:
            producer = self._connect()
            futures = [producer.send(self.kafka.topic, key=s.user_id.encode(), value=to_json(event),
                                     timestamp_ms=s.ts_ms)
                       for s in batch for event in s.events()]
            producer.flush(timeout=30)
            failed = sum(1 for f in futures if f.failed())
            metrics.IMPRESSIONS_SENT.inc(n - failed)
            if failed:
                metrics.IMPRESSIONS_DROPPED.labels("kafka_error").inc(failed)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - Kafka down or slow: count, reconnect later, never raise
            metrics.IMPRESSIONS_DROPPED.labels("kafka_error").inc(n)
            self.last_error = str(exc)[:300]
            log.warning("dropped %d impression events: Kafka at %s failed (%s)", n, self.kafka.bootstrap_servers,
                        self.last_error)
            self._reset()
            self._stop.wait(1.0)  # do not spin against a dead broker
        finally:
            with self._lock:
                self._pending -= n

    def _connect(self):
        if self._producer is None:
            from feedloop.streams import producer

            self._producer = producer(self.kafka, linger_ms=50, max_block_ms=5000, request_timeout_ms=10_000,
                                      retries=3)
        return self._producer

    def _reset(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:  # noqa: BLE001 - already broken
                pass
        self._producer = None
