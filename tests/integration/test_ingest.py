"""The Kafka -> S3 sink on the real embedded Kafka and S3: exactly once, dead letters, late events, replay."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import orjson
import pyarrow.compute as pc
import pytest

from feedloop.core import layout as lake
from feedloop.ops import simulate
from feedloop.ingest import replay, sink
from feedloop.ingest.checkpoint import Checkpoint
from tests.support.kafka_helpers import NOW, deadletters, event, lake_objects, lake_rows, send, send_events

pytestmark = pytest.mark.integration


def _settings(embedded, topic: str, **ingest):
    return embedded.model_copy(update={
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "ingest": embedded.ingest.model_copy(update={"poll_timeout_ms": 500, **ingest}),
    })


def _simulated(embedded, topic: str, *, start=date(2026, 11, 1), days=1, events_per_day=3000, seed=21) -> set[str]:
    sim = simulate.Simulator(embedded, start=start, days=days, events_per_day=events_per_day, seed=seed)
    records = list(sim.records(simulate.SimulationReport(start, days)))
    simulate.produce(embedded, iter(records), topic=topic)
    return {orjson.loads(r.value)["event_id"] for r in records}


def _ingest_process(topic: str, failpoint: str | None = None, chunk_records: int = 400):
    env = {**os.environ, "FEEDLOOP_KAFKA__TOPIC": topic, "FEEDLOOP_INGEST__CHUNK_RECORDS": str(chunk_records),
           "FEEDLOOP_INGEST__POLL_TIMEOUT_MS": "500"}
    if failpoint:
        env["FEEDLOOP_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "feedloop.ops.cli", "ingest", "run"], env=env, capture_output=True,
                          text=True, timeout=300)


def _assert_exactly_once(store, settings, topic: str, produced: set[str]) -> None:
    rows = lake_rows(store, settings, topic)
    ids = rows["event_id"].to_pylist()
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert set(ids) == produced


@pytest.mark.parametrize("failpoint", [
    pytest.param("mid_upload", id="killed-mid-upload"),
    pytest.param("after_upload", id="killed-after-upload-before-checkpoint"),
    pytest.param("after_checkpoint", id="killed-after-checkpoint-before-offset-commit"),
    pytest.param("after_commit", id="killed-after-offset-commit"),
])
def test_sigkill_at_each_step_then_rerun_stores_every_event_exactly_once(embedded, store, topic, failpoint):
    produced = _simulated(embedded, topic)
    crashed = _ingest_process(topic, failpoint)
    assert crashed.returncode == -9, crashed.stderr[-2000:]

    rerun = _ingest_process(topic)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    settings = _settings(embedded, topic)
    _assert_exactly_once(store, settings, topic, produced)

    # More traffic after the recovery still lands once, and Kafka's offsets match the checkpoints.
    produced |= _simulated(embedded, topic, start=date(2026, 11, 2), seed=22)
    assert _ingest_process(topic).returncode == 0
    _assert_exactly_once(store, settings, topic, produced)
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.ingest.group_id)
    try:
        for p in sorted(probe.partitions_for_topic(topic)):
            ckpt = Checkpoint.load(store, settings.s3.lake_bucket, topic, p)
            assert probe.committed(TopicPartition(topic, p)) == ckpt.next_offset
    finally:
        probe.close()


class _FailingObjectPuts:
    """The real store, but its `fail_at`-th object put (checkpoints aside) raises: S3 failing mid-run."""

    def __init__(self, store, fail_at: int):
        self.store, self.fail_at, self.puts = store, fail_at, 0

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def put(self, bucket: str, key: str, body: bytes, **conditions) -> str:
        if not key.startswith("_ingest/"):
            self.puts += 1
            if self.puts == self.fail_at:
                raise OSError("injected: S3 answered 503 SlowDown")
        return self.store.put(bucket, key, body, **conditions)


def test_an_upload_failing_in_the_writer_fails_the_run_commits_no_offset_and_the_rerun_lands_all_once(
        embedded, store, topic):
    produced = _simulated(embedded, topic)
    settings = _settings(embedded, topic, chunk_records=200)
    with pytest.raises(OSError, match="injected"):
        sink.run(settings, store=_FailingObjectPuts(store, fail_at=5))
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.ingest.group_id)
    try:
        assert all(probe.committed(TopicPartition(topic, p)) is None for p in probe.partitions_for_topic(topic))
    finally:
        probe.close()
    assert sink.run(settings).records > 0
    _assert_exactly_once(store, settings, topic, produced)


def test_a_retried_run_rewrites_the_same_objects_with_the_same_bytes(embedded, store, topic):
    produced = _simulated(embedded, topic)
    assert _ingest_process(topic, "after_upload").returncode == -9
    first = lake_objects(store, embedded, topic)
    assert _ingest_process(topic).returncode == 0
    second = lake_objects(store, embedded, topic)
    assert set(first) <= set(second)
    assert all(second[k] == v for k, v in first.items()), "a retried run changed an object it had written"
    _assert_exactly_once(store, embedded, topic, produced)


POISON = [
    pytest.param(b"this is not json", "not valid JSON", id="not-json"),
    pytest.param(b"", "not valid JSON", id="empty-value"),
    pytest.param(orjson.dumps({k: v for k, v in event(9001, NOW).items() if k != "user_id"}), "user_id: missing",
                 id="missing-field"),
    pytest.param(orjson.dumps(event(9002, NOW, position="first")), "position: expected an integer", id="mistyped-field"),
    pytest.param(orjson.dumps(event(9003, NOW, event_type="purchase")), "event_type: 'purchase' is not allowed",
                 id="unknown-event-type"),
    pytest.param(orjson.dumps(event(9004, NOW - timedelta(hours=100))), "h before its arrival", id="too-old"),
    pytest.param(orjson.dumps(event(9005, NOW + timedelta(hours=1))), "min after its arrival", id="too-far-in-future"),
]


def test_every_kind_of_poisoned_message_lands_in_dead_letters_with_its_reason(embedded, store, topic):
    good = [event(i, NOW - timedelta(minutes=5)) for i in range(800)]
    send_events(embedded, topic, good)
    send(embedded, topic, [(p.values[0], NOW) for p in POISON])
    report = sink.run(_settings(embedded, topic), run_id=f"poison-{topic}")

    assert report.records == 800 + len(POISON) and report.deadletters == len(POISON)
    dead = deadletters(store, embedded, topic).sort_by("kafka_offset").to_pylist()
    assert [d["raw"] for d in dead] == [p.values[0] for p in POISON]
    for d, p in zip(dead, POISON):
        assert p.values[1] in d["reason"], (p.id, d["reason"])
        assert d["kafka_topic"] == topic and d["kafka_partition"] == 0 and d["kafka_offset"] >= 800
    assert set(lake_rows(store, embedded, topic)["event_id"].to_pylist()) == {e["event_id"] for e in good}
    manifest = store.get_json(embedded.s3.lake_bucket, lake.run_manifest_key(f"poison-{topic}"))
    assert manifest["deadletters"] == len(POISON) and manifest["partitions"]["0"]["events"] == 800


def test_too_many_bad_records_fail_the_run_after_saving_everything(embedded, store, topic):
    send_events(embedded, topic, [event(i, NOW - timedelta(minutes=1)) for i in range(20)])
    send(embedded, topic, [(b"garbage", NOW)] * 5)
    settings = _settings(embedded, topic, max_bad_ratio=0.1)
    with pytest.raises(sink.IngestError) as err:
        sink.run(settings)
    message = str(err.value)
    assert "5 of 25 records (20.0%)" in message and "max_bad_ratio=10.0%" in message
    assert f"s3://{embedded.s3.lake_bucket}/deadletter/engagement/" in message
    assert deadletters(store, embedded, topic).num_rows == 5
    assert lake_rows(store, embedded, topic).num_rows == 20
    assert sink.run(settings).records == 0, "the failed run's records must not be read again"


def test_duplicate_event_ids_in_a_run_are_stored_once(embedded, store, topic):
    evs = [event(i, NOW - timedelta(minutes=3)) for i in range(50)]
    send_events(embedded, topic, evs + evs[:10])
    report = sink.run(_settings(embedded, topic))
    assert report.records == 60
    assert sorted(lake_rows(store, embedded, topic)["event_id"].to_pylist()) == sorted(e["event_id"] for e in evs)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_batches_a_third_party_producer_compressed_with_any_kafka_codec_land(embedded, store, topic, codec):
    """Java, Go and librdkafka producers often compress (compression.type): the sink must read every codec Kafka
    defines, or one such producer stops ingest for the whole topic."""
    from confluent_kafka import Producer

    from feedloop.core.credentials import resolve_kafka

    sent = NOW - timedelta(minutes=3)
    evs = [event(i, sent) for i in range(300)]
    producer = Producer({**resolve_kafka(embedded.kafka).confluent(), "compression.type": codec, "linger.ms": 20})
    arrival_ms = int((sent + timedelta(seconds=2)).timestamp() * 1000)
    for e in evs:
        producer.produce(topic, value=orjson.dumps(e), partition=0, timestamp=arrival_ms)
    assert producer.flush(30) == 0

    report = sink.run(_settings(embedded, topic))

    assert (report.records, report.deadletters) == (300, 0)
    assert sorted(lake_rows(store, embedded, topic)["event_id"].to_pylist()) == sorted(e["event_id"] for e in evs)


def test_late_events_land_in_their_own_hour_in_a_new_object(embedded, store, topic):
    hour = (NOW - timedelta(hours=6)).replace(minute=0, second=0)
    on_time = [event(i, hour + timedelta(minutes=i % 50)) for i in range(100)]
    send_events(embedded, topic, on_time)
    settings = _settings(embedded, topic, chunk_records=100)
    sink.run(settings)
    part = lake.HourPartition.of(hour)
    before = {k: v for k, v in lake_objects(store, embedded, topic).items() if k.startswith(part.prefix)}
    assert len(before) == 1

    late = event(500, hour + timedelta(minutes=30))
    send(embedded, topic, [(orjson.dumps(late), NOW)])  # arrives ~6 h after it happened
    sink.run(settings)
    after = {k: v for k, v in lake_objects(store, embedded, topic).items() if k.startswith(part.prefix)}
    assert set(after) == set(before) | {lake.events_key(part, topic, 0, 100)}
    assert all(after[k] == v for k, v in before.items()), "the on-time object was rewritten"
    rows = lake_rows(store, embedded, topic)
    late_row = rows.filter(pc.equal(rows["event_id"], late["event_id"])).to_pylist()[0]
    assert (late_row["ingest_ts"] - late_row["event_ts"]) > timedelta(hours=5)


def test_replay_of_a_day_is_byte_identical_and_restores_a_lost_object(embedded, store, topic):
    _simulated(embedded, topic, start=date(2026, 11, 3), days=2, events_per_day=2500)
    settings = _settings(embedded, topic, chunk_records=700)
    sink.run(settings)
    day_prefix = lake.day_prefix(date(2026, 11, 3))
    original = {k: v for k, v in lake_objects(store, embedded, topic).items() if k.startswith(day_prefix)}
    lost = sorted(original)[3]
    store.delete(embedded.s3.lake_bucket, lost)

    start = datetime(2026, 11, 3, tzinfo=timezone.utc)
    report = replay.replay_time(settings, start=start, end=start + timedelta(days=1))
    assert report.created == [lost] and not report.changed and not report.raced
    assert set(original) <= set(report.unchanged) | set(report.created)
    now = {k: v for k, v in lake_objects(store, embedded, topic).items() if k.startswith(day_prefix)}
    assert now == original

    by_offsets = replay.replay_offsets(settings, partition=0, start=0, end=10_000)
    assert not by_offsets.changed and not by_offsets.created and by_offsets.unchanged


def test_changing_the_chunk_size_of_an_ingested_topic_is_refused(embedded, topic):
    send_events(embedded, topic, [event(i, NOW) for i in range(5)])
    sink.run(_settings(embedded, topic, chunk_records=100))
    with pytest.raises(sink.IngestError, match="chunk_records is 200 but .* was written with 100"):
        sink.run(_settings(embedded, topic, chunk_records=200))


@pytest.mark.airflow
def test_airflow_dags_test_ingest_engagement(embedded, store, topic, airflow_cli):
    produced = _simulated(embedded, topic, events_per_day=1500, seed=31)
    result = airflow_cli("dags", "test", "ingest_engagement", "2026-11-20T00:00:00+00:00",
                         env_extra={"FEEDLOOP_KAFKA__TOPIC": topic})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "success" in (result.stdout + result.stderr).lower()
    _assert_exactly_once(store, embedded, topic, produced)
