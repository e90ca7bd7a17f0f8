"""A reset Kafka log under an existing checkpoint, on the real embedded Kafka and S3.

Before: the sink sought to the old next_offset in the new (shorter) log, read nothing, said
"ingested 0 records ... stopped on empty_poll" and every new event was skipped until the log
grew past it. Now the run fails naming partition, checkpoint and log; `feedloop ingest
reset-checkpoint` (recorded in the audit trail) lets the next run land the new log exactly once,
without touching what the old log landed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import orjson
import pytest

from feedloop.core import layout as lake
from feedloop.ingest import replay, sink
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.errors import LogMismatch
from feedloop.core.streams import ensure_topic
from tests.support.kafka_helpers import NOW, event, lake_objects, lake_rows, send_events

pytestmark = pytest.mark.integration


def _settings(embedded, topic: str):
    return embedded.model_copy(update={
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "ingest": embedded.ingest.model_copy(update={"poll_timeout_ms": 500, "chunk_records": 200}),
    })


def _recreate(embedded, topic: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=embedded.kafka.bootstrap_servers)
    try:
        admin.delete_topics([topic])
        for _ in range(50):
            if topic not in admin.list_topics():
                break
            time.sleep(0.2)
    finally:
        admin.close()
    ensure_topic(embedded.kafka, topic=topic, partitions=embedded.kafka.partitions)


def _cli(topic: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEEDLOOP_KAFKA__TOPIC": topic, "FEEDLOOP_INGEST__CHUNK_RECORDS": "200",
           "FEEDLOOP_INGEST__POLL_TIMEOUT_MS": "500"}
    return subprocess.run([sys.executable, "-m", "feedloop.ops.cli", "ingest", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("topic_id_recorded", [
    pytest.param(True, id="recreated-topic-has-another-id"),
    pytest.param(False, id="checkpoint-from-before-topic-ids-ahead-of-the-new-log"),
])
def test_a_recreated_topic_fails_the_run_until_reset_then_the_new_log_lands_exactly_once(
        embedded, store, topic, topic_id_recorded):
    settings = _settings(embedded, topic)
    bucket = settings.s3.lake_bucket
    old = [event(i, NOW - timedelta(minutes=20)) for i in range(500)]
    send_events(settings, topic, old)
    assert sink.run(settings).records == 500
    landed = lake_objects(store, settings, topic)
    if not topic_id_recorded:  # as a checkpoint written before this check existed
        doc = store.get_json(bucket, lake.checkpoint_key(topic, 0))
        store.put_json(bucket, lake.checkpoint_key(topic, 0), {**doc, "topic_id": ""})

    _recreate(settings, topic)
    new = [event(10_000 + i, NOW - timedelta(minutes=10)) for i in range(120)]
    send_events(settings, topic, new)
    with pytest.raises(LogMismatch) as err:
        sink.run(settings)
    message = str(err.value)
    assert f"{topic}[0]: the checkpoint says next_offset 500" in message
    assert "offsets 0-119" in message
    assert "recreated" in message if topic_id_recorded else "the log was reset" in message
    assert "feedloop ingest reset-checkpoint --partition 0 --to earliest" in message
    failed = _cli(topic, "run")
    assert failed.returncode == 1 and f"{topic}[0]: the checkpoint says next_offset 500" in failed.stderr
    with pytest.raises(LogMismatch):  # rebuilding the old objects from the new log would replace their rows
        replay.replay_offsets(settings, partition=0, start=0, end=500)
    assert lake_objects(store, settings, topic) == landed

    reset = _cli(topic, "reset-checkpoint", "--partition", "0", "--to", "earliest", "--reason", "topic recreated",
                 "-o", "json")
    assert reset.returncode == 0, reset.stderr[-2000:]
    record = orjson.loads(reset.stdout)
    audit = store.get_json(bucket, record["audit_key"])
    assert audit["reason"] == "topic recreated" and audit["by"].startswith("cli ")
    assert audit["before"]["next_offset"] == 500 and audit["after"]["next_offset"] == 0
    assert audit["after"]["generation"] == 1 and audit["log"]["end"] == 120

    report = sink.run(settings)
    assert report.records == 120 and all(".g1.parquet" in key for key in report.objects)
    ids = lake_rows(store, settings, topic)["event_id"].to_pylist()
    assert sorted(ids) == sorted(e["event_id"] for e in old + new), "an event is missing or stored twice"
    now = lake_objects(store, settings, topic)
    assert all(now[key] == body for key, body in landed.items()), "an object of the old log was changed"
    assert sink.run(settings).records == 0
    again = replay.replay_offsets(settings, partition=0, start=0, end=500)  # the new log's objects only
    assert again.unchanged and not again.changed and not again.created
    assert set(again.unchanged) == {k for k in lake_objects(store, settings, topic) if ".g1." in k}
    assert Checkpoint.load(store, bucket, topic, 0).next_offset == 120
    assert "topic recreated" in _cli(topic, "audit").stdout
