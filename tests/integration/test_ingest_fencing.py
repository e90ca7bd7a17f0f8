"""Fencing on the real embedded S3 (SeaweedFS): its conditional puts really stop a second writer.

The interleavings themselves are in tests/unit/ingest/test_fencing.py (a fake store lets them
stop at every call); here the same writers run against the real store, at the orderings that lost
rows before the fence, and the real Kafka log is not needed (records are handed to the sink).
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from feedloop.contract.lake import LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.ingest import replay
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk
from feedloop.ingest.errors import Fenced, IngestError
from feedloop.ingest.partition import PartitionSink
from feedloop.ingest.writer import read_parquet
from feedloop.core.storage import PreconditionFailed
from tests.support.kafka_helpers import NOW, event
from tests.unit.ingest.fakestore import Interleaved

pytestmark = pytest.mark.integration

# The log straddles an hour boundary at offset 1,122, so a run writes two objects (one per event hour) and a
# writer can be fenced between them; before this was fixed, the wall clock decided whether it did.
STRADDLE = 1_122
_FIRST = NOW.replace(minute=0, second=0) - timedelta(hours=2, seconds=STRADDLE)
LOG = [(i, int((_FIRST + timedelta(seconds=i + 2)).timestamp() * 1000),
        orjson.dumps(event(i, _FIRST + timedelta(seconds=i)))) for i in range(1_300)]


def _settings(embedded, topic: str):
    return embedded.model_copy(update={
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "ingest": embedded.ingest.model_copy(update={"chunk_records": 2_000}),
    })


def _add(sink: PartitionSink, upto: int) -> None:
    part = LOG[sink.next_offset:upto]
    sink.add([r[0] for r in part], [r[1] for r in part], [r[2] for r in part])


def _stored_offsets(store, settings, topic: str) -> list[int]:
    offsets = []
    for key in store.list_keys(settings.s3.lake_bucket, lake.EVENTS_PREFIX):
        if (ref := lake.parse_key(key)) and ref.topic == topic:
            offsets += read_parquet(store.get(settings.s3.lake_bucket, key).body, LAKE_SCHEMA)["kafka_offset"].to_pylist()
    return sorted(offsets)


def test_seaweedfs_refuses_a_put_on_a_stale_etag_and_a_create_over_an_existing_object(store, embedded, topic):
    bucket, key = embedded.s3.lake_bucket, f"_test/{topic}/cas.json"
    first = store.put(bucket, key, b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put(bucket, key, b"2", if_none_match=True)
    second = store.put(bucket, key, b"2", if_match=first)
    with pytest.raises(PreconditionFailed):
        store.put(bucket, key, b"3", if_match=first)
    assert store.get(bucket, key).body == b"2" and store.get(bucket, key).etag == second


def _sink_run(store, settings, topic: str, upto: int) -> None:
    sink = PartitionSink(store, settings, topic, 0)
    _add(sink, upto)
    sink.flush()


def _replay_run(store, settings, topic: str) -> None:
    def read(chunk: Chunk, stop: int) -> int:
        part = LOG[chunk.start:stop]
        chunk.add([r[0] for r in part], [r[1] for r in part], [r[2] for r in part])
        return len(part)

    replay.rebuild_partition(settings, store, 0, [0], read, replay.ReplayReport())


WRITERS = {
    "sink-to-1200": lambda store, settings, topic: _sink_run(store, settings, topic, 1_200),
    "sink-to-1100": lambda store, settings, topic: _sink_run(store, settings, topic, 1_100),
    "replay": _replay_run,
}


@pytest.mark.parametrize("first,second", [
    pytest.param("sink-to-1200", "sink-to-1100", id="sink-interrupted-by-a-second-sink"),
    pytest.param("sink-to-1200", "replay", id="sink-interrupted-by-a-replay"),
    pytest.param("replay", "sink-to-1200", id="replay-interrupted-by-a-sink"),
])
def test_two_writers_interleaved_at_every_store_call_on_seaweedfs_lose_no_landed_row(store, embedded, topic,
                                                                                   first, second):
    settings = _settings(embedded, topic)
    for at in range(40):
        name = f"{topic}-{at}"
        _sink_run(store, settings, name, 1_000)
        step = Interleaved(store, at, lambda: _quietly(WRITERS[second], store, settings, name))
        _quietly(WRITERS[first], step, settings, name)
        step.finish()
        ckpt = Checkpoint.load(store, settings.s3.lake_bucket, name, 0)
        stored = _stored_offsets(store, settings, name)
        # Below the checkpoint: every row, once. Above it, the fenced writer may have left its other hour's object
        # (a run that never committed): rows of the log, once, which the next run's write of that key replaces.
        assert stored[:ckpt.next_offset] == list(range(ckpt.next_offset)), f"interrupted at call {at}"
        assert stored == sorted(set(stored)) and set(stored) <= set(range(len(LOG))), f"interrupted at call {at}"
        _sink_run(store, settings, name, len(LOG))
        assert _stored_offsets(store, settings, name) == list(range(len(LOG))), f"interrupted at call {at}, then"
        if step.calls <= at:
            break  # `second` ran after the last call of `first`: every point is covered


def _quietly(writer, store, settings, topic: str) -> None:
    try:
        writer(store, settings, topic)
    except IngestError:
        pass  # fenced: said so and committed nothing


def test_of_two_sink_runs_on_one_partition_the_older_is_fenced_and_no_landed_row_is_lost(store, embedded, topic):
    settings = _settings(embedded, topic)
    first = PartitionSink(store, settings, topic, 0, owner="run-a")
    _add(first, 1_000)
    first.flush()
    older = PartitionSink(store, settings, topic, 0, owner="zombie")   # reads the checkpoint at 1,000
    newer = PartitionSink(store, settings, topic, 0, owner="dag-run")  # claims it after
    _add(newer, 1_200)
    newer.flush()
    _add(older, 1_100)
    with pytest.raises(Fenced, match=rf"{topic}\[0\].*claimed by dag-run .*next_offset 1,200"):
        older.flush()  # before the fence it shrank the object to 1,100 rows under a checkpoint at 1,200
    ckpt = Checkpoint.load(store, settings.s3.lake_bucket, topic, 0)
    assert ckpt.next_offset == 1_200 and ckpt.owner == "dag-run"
    assert _stored_offsets(store, settings, topic) == list(range(1_200))


def test_a_replay_never_shrinks_the_object_a_sink_run_grew_meanwhile(store, embedded, topic):
    settings = _settings(embedded, topic)
    sink = PartitionSink(store, settings, topic, 0, owner="run-a")
    _add(sink, 1_000)
    sink.flush()

    def read(chunk: Chunk, stop: int) -> int:
        # the replay has read the checkpoint (1,000) and rebuilds from the log when a sink run lands up to 1,300
        later = PartitionSink(store, settings, topic, 0, owner="run-b")
        _add(later, 1_300)
        later.flush()
        chunk.add([r[0] for r in LOG[:stop]], [r[1] for r in LOG[:stop]], [r[2] for r in LOG[:stop]])
        return stop

    report = replay.ReplayReport()
    replay.rebuild_partition(settings, store, 0, [0], read, report)
    assert report.raced and not report.changed, report
    assert Checkpoint.load(store, settings.s3.lake_bucket, topic, 0).next_offset == 1_300
    assert _stored_offsets(store, settings, topic) == list(range(1_300))
