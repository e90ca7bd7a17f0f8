"""The pod's impression log against the real embedded Kafka: one bad list never stops the next ones.

Why: a single ~1 MB query once made librdkafka raise MSG_SIZE_TOO_LARGE inside the logging thread;
only BufferError was caught, the thread died and every later impression was dropped silently.
Each fault below hits one list; the lists after it must still reach Kafka and the failure must be
counted in feedloop_impressions_dropped_total by reason.
"""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import REGISTRY

from feedloop.contract import impression_lists
from feedloop.serving.impressions import ImpressionLog, ServedList

pytestmark = pytest.mark.integration


def _served(request_id: str, *, n: int = 3, query: str | None = None) -> ServedList:
    return ServedList(request_id=request_id, tenant_id="acme", user_id="acme-u001", surface="search", device="web",
                      query=query, ts_ms=int(time.time() * 1000), logged_ms=int(time.time() * 1000), model_version="v-test", explore=False,
                      item_ids=[f"acme-i{i}" for i in range(n)], author_ids=[None] * n)


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("feedloop_impressions_dropped_total", {"reason": reason}) or 0.0


class _Faulty:
    """The real librdkafka producer, except that values containing `trigger` raise `fault` on produce()."""

    def __init__(self, producer, trigger: bytes, fault: Exception):
        self._producer, self._trigger, self._fault = producer, trigger, fault

    def produce(self, topic, *, value, **kwargs):
        if self._trigger in value:
            raise self._fault
        return self._producer.produce(topic, value=value, **kwargs)

    def __getattr__(self, name):
        return getattr(self._producer, name)


def _log_with_fault(embedded, topic: str, trigger: bytes | None, fault: Exception | None) -> ImpressionLog:
    kafka = embedded.kafka.model_copy(update={"topic": topic})

    class Log(ImpressionLog):
        def _connect(self):
            real = super()._connect()
            return real if fault is None else _Faulty(real, trigger, fault)

    return Log(kafka, embedded.serving)


def _read(embedded, topic: str, *, expect: int, timeout: float = 30) -> list:
    from kafka import TopicPartition

    from feedloop.core.streams import consumer

    c = consumer(embedded.kafka)
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        out, deadline = [], time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        c.close()


def _wait_settled(log: ImpressionLog, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while log.pending() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("fault, reason", [
    pytest.param(None, "message_too_large", id="a-real-1MB-query-librdkafka-refuses"),
    pytest.param(BufferError("Local: Queue full"), "producer_queue_full", id="librdkafka-queue-full"),
    pytest.param(RuntimeError("anything at all"), "produce_error", id="any-other-exception"),
])
def test_one_failing_list_is_counted_and_the_lists_after_it_still_reach_kafka(embedded, topic, fault, reason):
    big = "q" * 1_100_000 if fault is None else "poison"
    log = _log_with_fault(embedded, topic, b"poison", fault)
    before = _dropped(reason)
    log.start()
    try:
        assert log.submit(_served("before", n=3))
        _wait_settled(log)
        log.submit(_served("bad", n=4, query=big))
        _wait_settled(log)
        for i in range(5):
            assert log.submit(_served(f"after-{i}", n=3))
        _wait_settled(log)
        assert log.pending() == 0
    finally:
        log.stop()
    got = [e for r in _read(embedded, topic, expect=6) for e in impression_lists.to_events(orjson.loads(r.value))]
    requests = sorted({e["request_id"] for e in got})
    assert requests == ["after-0", "after-1", "after-2", "after-3", "after-4", "before"]
    assert len(got) == 18
    assert _dropped(reason) - before == 4
