"""Every served list goes back to Kafka as one impression-list record, without ever slowing a request.

Why: the loop closes only if what the pods showed becomes the next training set, stamped with the
model version that ranked it. Requests hand the list to a buffer bounded in events and in bytes and
return; one background thread encodes each list as one record (feedloop.contract.impression_lists:
the ingest sink expands it into the impression events, one per item) and produces them. When Kafka
is slow or down the buffer fills and further lists are dropped and counted
(feedloop_impressions_dropped_total by reason, in events), never blocking or failing a request. No
single list can stop the thread: whatever producing it raises is counted and the next list goes out.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson

from feedloop.core.config import KafkaSettings, ServingSettings
from feedloop.core.credentials import resolve_kafka
from feedloop.contract import impression_lists
from feedloop.contract.events import format_ts
from feedloop.serving import metrics

log = logging.getLogger("feedloop.serving.impressions")
# JSON keys and fixed values of a list record beyond its strings (tests/unit/serving/test_impression_buffer.py
# holds the estimate to the real size)
RECORD_ENVELOPE_BYTES = 240


@dataclass(frozen=True)
class ServedList:
    """One ranked list as shown: items in display order (position = index + 1)."""

    request_id: str
    tenant_id: str
    user_id: str
    surface: str
    device: str
    query: str | None
    ts_ms: int                        # the event time of its impressions
    logged_ms: int                    # the Kafka record timestamp: the pod's clock (the simulated one in simulations)
    model_version: str
    explore: bool
    item_ids: Sequence[str]
    author_ids: Sequence[str | None]
    retriever_version: str | None = None  # /recommend: the retriever that chose the candidates

    def record(self) -> bytes:
        """The list's wire record (feedloop.contract.impression_lists)."""
        return impression_lists.encode(
            request_id=self.request_id, event_ts=format_ts(datetime.fromtimestamp(self.ts_ms / 1000, timezone.utc)),
            tenant_id=self.tenant_id, user_id=self.user_id, surface=self.surface, device=self.device, query=self.query,
            explore=self.explore, model_version=self.model_version, item_ids=self.item_ids, author_ids=self.author_ids,
            retriever_version=self.retriever_version)

    def wire_bytes(self) -> int:
        """Its record's size on the wire, at most, without encoding it (this runs on the request path): the
        strings' JSON plus a fixed envelope."""
        shared = orjson.dumps([self.tenant_id, self.user_id, self.request_id, self.surface, self.device, self.query,
                               self.model_version, self.retriever_version])
        retriever_key = len(impression_lists.RETRIEVER_KEY) if self.retriever_version is not None else 0
        return (RECORD_ENVELOPE_BYTES + retriever_key + len(shared) + len(orjson.dumps(self.item_ids))
                + len(orjson.dumps([a or "unknown" for a in self.author_ids])))


class ImpressionLog:
    """A bounded buffer drained to Kafka by one daemon thread through librdkafka (confluent-kafka).

    Why not kafka-python here: its pure-Python producer took 40 ms of CPU for one 500-item list
    (measured with a local Tansu broker), inside the pod's process and under its GIL; librdkafka
    took 2 ms and sends from its own C threads. An event counts as pending from submit() until
    Kafka acknowledges it or it fails, so the buffer bounds everything not yet delivered; the bytes
    of lists not yet taken by the thread are bounded too (librdkafka bounds its own queue's).
    """

    def __init__(self, kafka: KafkaSettings, cfg: ServingSettings):
        self.kafka, self.cfg = kafka, cfg
        self._client_config = resolve_kafka(kafka).confluent()  # bootstrap, SASL, TLS: a bad one stops the pod here
        self._queue: queue.Queue[tuple[ServedList, int]] = queue.Queue()
        self._pending = 0                 # events submitted and not yet delivered or dropped
        self._queued_bytes = 0            # wire bytes of the lists in _queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer: Any = None        # created by start()
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._acked = 0                   # delivery reports since the last _settle() ...
        self._failed: Counter[str] = Counter()  # ... and events lost since then, by reason
        self.last_error: str | None = None

    def start(self) -> None:
        """Create the producer here, not in the thread: a configuration librdkafka refuses fails the pod's
        start, where it is seen, instead of ending the logging thread and dropping every impression."""
        self._producer = self._connect()
        self._thread.start()

    def submit(self, served: ServedList) -> bool:
        """Queue a list for Kafka; False (and counted) if the buffer is full. Never blocks."""
        n, size = len(served.item_ids), served.wire_bytes()
        with self._lock:
            if (self._pending + n > self.cfg.impression_buffer
                    or self._queued_bytes + size > self.cfg.impression_buffer_bytes):
                metrics.IMPRESSIONS_DROPPED.labels("buffer_full").inc(n)
                return False
            self._pending += n
            self._queued_bytes += size
        self._queue.put_nowait((served, size))
        return True

    def pending(self) -> int:
        return self._pending

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is buffered: the thread drains its queue and flushes the producer (up to timeout)."""
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        producer = self._producer
        while True:
            batch = self._take_batch()
            for served in batch:
                self._send(producer, served)
            try:
                producer.poll(0)  # runs the delivery reports of what Kafka answered so far
            except Exception as exc:  # a failing callback must not end the thread: log, go on
                log.exception("impression log: polling the producer failed")
                self.last_error = f"poll: {exc}"[:300]
            self._settle()
            if not batch and self._stop.is_set():
                producer.flush(5)
                self._settle()
                return

    def _take_batch(self) -> list[ServedList]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch, events, size = [first[0]], len(first[0].item_ids), first[1]
        while events < self.cfg.impression_batch:
            try:
                item, item_size = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            events += len(item.item_ids)
            size += item_size
        with self._lock:
            self._queued_bytes -= size
        return batch

    def _send(self, producer, served: ServedList) -> None:
        """Produce a list's record; never raises: a list librdkafka refuses is counted by reason (in events)."""
        n = len(served.item_ids)
        try:
            producer.produce(self.kafka.topic, key=served.user_id.encode(), value=served.record(),
                             timestamp=served.logged_ms, on_delivery=lambda err, _msg: self._delivered(err, n))
        except BufferError as exc:  # librdkafka's own queue is full (Kafka slow)
            self._lost("producer_queue_full", n, exc)
        except Exception as exc:  # e.g. MSG_SIZE_TOO_LARGE: this list only, the next may go
            self._lost(_reason(exc), n, exc)

    def _lost(self, reason: str, n: int, exc: BaseException) -> None:
        """Count dropped events; logged when the error changes (a full queue would log every list)."""
        self._failed[reason] += n
        text = f"{reason}: {type(exc).__name__}: {exc}"[:300]
        if text != self.last_error:
            log.warning("impression log: %d event(s) of a list dropped: %s", n, text)
        self.last_error = text

    def _delivered(self, err, events: int) -> None:
        """One call per list, from poll() on this thread: only count (its events) here, _settle() publishes."""
        if err is None:
            self._acked += events
        else:
            self._failed["kafka_error"] += events
            self.last_error = str(err)[:300]

    def _settle(self) -> None:
        acked, failed, self._acked, self._failed = self._acked, self._failed, 0, Counter()
        if acked:
            metrics.IMPRESSIONS_SENT.inc(acked)
            if not failed:
                self.last_error = None
        for reason, n in failed.items():
            metrics.IMPRESSIONS_DROPPED.labels(reason).inc(n)
        if acked or failed:
            with self._lock:
                self._pending -= acked + failed.total()

    def _on_error(self, err) -> None:
        """Broker down, unknown host, ...: librdkafka keeps reconnecting; undelivered events fail on their timeout.

        Logged when the error changes, not on every reconnect attempt.
        """
        text = str(err)[:300]
        if text != self.last_error:
            log.warning("impression log: Kafka at %s: %s", self.kafka.bootstrap_servers, text)
        self.last_error = text

    def _connect(self):
        from confluent_kafka import Producer

        return Producer({
            **self._client_config,
            "acks": "all",
            "linger.ms": 50,
            "batch.size": 256 * 1024,
            "message.timeout.ms": 10_000,   # an event Kafka has not taken by then is dropped and counted
            "queue.buffering.max.messages": max(self.cfg.impression_buffer, 1),
            "queue.buffering.max.kbytes": self.cfg.impression_buffer_bytes // 1024,
            "error_cb": self._on_error,
            "logger": log,
            "log_level": 2,                 # librdkafka's own lines: critical only; errors come through error_cb
        })


def _reason(exc: Exception) -> str:
    """The metric label of a produce() failure: librdkafka's size refusal by name, anything else as one."""
    from confluent_kafka import KafkaError, KafkaException

    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return "message_too_large"
    return "produce_error"
