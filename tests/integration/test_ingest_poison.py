"""No poison pill, on the real embedded Kafka and S3: records that used to stop every sink run at their offset.

Before the decoder and chunk fixes of issue 17 each of these made `sink.run` raise (or kill the process)
at the same offset on every run and retry, and replay used the same decoder:
- a JSON `null` first in a fetched block: pyarrow's JSON reader segfaulted (apache/arrow#47409);
- an event with event_ts 0001-01-01T00:00:00+01:00 beside a not-JSON record: OverflowError in astimezone;
- schema_version true (true == 1 in Python): the Arrow table refused it, failing the whole block;
- a good event whose Kafka record timestamp is in year 9999: OverflowError naming its arrival.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from feedloop.ingest import replay, sink
from feedloop.ingest.checkpoint import Checkpoint
from tests.support.kafka_helpers import NOW, deadletters, event, lake_objects, lake_rows, send

pytestmark = pytest.mark.integration

YEAR_9999 = datetime(9999, 12, 31, tzinfo=timezone.utc)
# offset -> (value, record timestamp, what the dead letter's reason starts with); the rest of 0..N are good
POISON = {
    0: (b"null", NOW, "<event>: expected a JSON object"),
    400: (orjson.dumps(event(400, NOW, event_ts="0001-01-01T00:00:00+01:00")), NOW, "event_ts: '0001-01-01T00"),
    401: (b"not json", NOW, "<event>: not valid JSON"),
    700: (orjson.dumps(event(700, NOW, schema_version=True)), NOW, "schema_version: expected 1"),
    900: (orjson.dumps(event(900, NOW - timedelta(minutes=5))), YEAR_9999, "kafka timestamp: 253402214400000 ms"),
}
RECORDS = 1200  # 5 of 1,200 dead-lettered: under ingest.max_bad_ratio (1 %), so the run succeeds


def _settings(embedded, topic: str):
    return embedded.model_copy(update={
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "ingest": embedded.ingest.model_copy(update={"poll_timeout_ms": 500, "chunk_records": 500}),
    })


def test_poison_among_good_events_is_dead_lettered_the_good_land_and_the_next_run_passes_the_offset(
        embedded, store, topic):
    good = {i: event(i, NOW - timedelta(minutes=5)) for i in range(RECORDS) if i not in POISON}
    send(embedded, topic, [POISON[i][:2] if i in POISON else (orjson.dumps(good[i]), NOW) for i in range(RECORDS)])
    settings = _settings(embedded, topic)

    report = sink.run(settings, run_id=f"poison-{topic}")

    assert report.records == RECORDS and report.deadletters == len(POISON)
    ids = lake_rows(store, embedded, topic)["event_id"].to_pylist()
    assert sorted(ids) == sorted(e["event_id"] for e in good.values()), "a good event was lost or doubled"
    dead = deadletters(store, embedded, topic).sort_by("kafka_offset").to_pylist()
    assert [d["kafka_offset"] for d in dead] == sorted(POISON)
    for d in dead:
        value, _, reason = POISON[d["kafka_offset"]]
        assert d["raw"] == value and d["reason"].startswith(reason), d["reason"]

    again = sink.run(settings, run_id=f"poison-again-{topic}")
    assert again.records == 0 and again.deadletters == 0, "the next run read the poisoned offsets again"
    assert Checkpoint.load(store, embedded.s3.lake_bucket, topic, 0).next_offset == RECORDS

    before = lake_objects(store, embedded, topic) | lake_objects(store, embedded, topic, "deadletter/")
    replayed = replay.replay_offsets(settings, partition=0, start=0, end=RECORDS)
    assert replayed.records == RECORDS and not replayed.changed and not replayed.created
    assert lake_objects(store, embedded, topic) | lake_objects(store, embedded, topic, "deadletter/") == before
