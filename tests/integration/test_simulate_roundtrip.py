from __future__ import annotations

from datetime import date

import pytest

from feedloop.ops import simulate
from feedloop.core.streams import consumer

pytestmark = pytest.mark.integration


def _read_all(settings, topic: str) -> list:
    """Read every record of the topic with assign() until polls come back empty (never the high watermark)."""
    from kafka import TopicPartition

    c = consumer(settings.kafka)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
        c.assign(parts)
        c.seek_to_beginning()
        out, empty = [], 0
        while empty < 3:
            polled = c.poll(timeout_ms=1000)
            empty = 0 if polled else empty + 1
            for msgs in polled.values():
                out.extend(msgs)
        return out
    finally:
        c.close()


def test_simulator_to_kafka_to_consumer_returns_exactly_the_events_sent(embedded, topic):
    sim = simulate.Simulator(embedded, start=date(2026, 11, 1), days=2, events_per_day=3000, seed=11)
    report = simulate.SimulationReport(start=date(2026, 11, 1), days=2)
    sent = list(sim.records(report))
    assert simulate.produce(embedded, iter(sent), topic=topic) == len(sent)

    got = _read_all(embedded, topic)
    assert sorted(m.value for m in got) == sorted(r.value for r in sent)
    # Record timestamps carry the arrival time, keys the user, so a user's events share a partition.
    by_value = {r.value: r for r in sent}
    assert all(m.timestamp == by_value[m.value].arrival_ms and m.key == by_value[m.value].key for m in got)
    partitions_per_user = {}
    for m in got:
        partitions_per_user.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in partitions_per_user.values())


def test_run_reports_throughput_and_writes_the_ground_truth(embedded, topic, tmp_path, monkeypatch):
    import orjson

    monkeypatch.setenv("FEEDLOOP_KAFKA__TOPIC", topic)
    from feedloop.core.config import load_settings

    settings = load_settings()
    truth = tmp_path / "truth.json"
    report = simulate.run(settings, start=date(2026, 11, 5), days=1, events_per_day=2000, seed=5,
                          ground_truth=truth, progress=False)
    assert report.events == len(_read_all(settings, topic))
    assert report.events_per_s > 0
    doc = orjson.loads(truth.read_bytes())
    assert len(doc["users"]) == settings.simulate.users and len(doc["items"]) == settings.simulate.items
    assert doc["start"] == "2026-11-05"
