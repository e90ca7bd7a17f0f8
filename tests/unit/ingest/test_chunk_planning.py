"""How the sink and replay cut a partition's offsets into chunks: at multiples of chunk_records, whatever a run read.

Object boundaries are a function of offsets alone (feedloop.ingest.chunk): a run that stops anywhere
and the next one that resumes from the checkpoint leave exactly the objects one long run would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.contract.lake import DEADLETTER_SCHEMA, LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.core.config import load_settings
from feedloop.ingest import replay
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk
from feedloop.ingest.errors import IngestError
from feedloop.ingest.partition import PartitionSink
from feedloop.ingest.writer import read_parquet
from tests.support.kafka_helpers import event
from tests.unit.ingest.fakestore import FakeStore

TOPIC = "engagement"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
LOG = [(i, int((T0 + timedelta(seconds=10 * i + 2)).timestamp() * 1000),
        b"not json" if i % 13 == 5 else orjson.dumps(event(i, T0 + timedelta(seconds=10 * i))))
       for i in range(45)]  # all in hour 10; a dead letter at 5, 18, 31 and 44


def _settings(chunk_records: int):
    base = load_settings(environ={})
    return base.model_copy(update={"ingest": base.ingest.model_copy(update={"chunk_records": chunk_records})})


SETTINGS = _settings(10)
BUCKET = SETTINGS.s3.lake_bucket


def _records(start: int, stop: int) -> tuple[list[int], list[int], list[bytes]]:
    part = LOG[start:stop]
    return [r[0] for r in part], [r[1] for r in part], [r[2] for r in part]


def _sink_run(store: FakeStore, upto: int, *, checkpoint: Checkpoint | None = None) -> PartitionSink:
    sink = PartitionSink(store, SETTINGS, TOPIC, 0, checkpoint=checkpoint)
    sink.add(*_records(sink.next_offset, upto))
    sink.flush()
    return sink


def _events(start: int) -> str:
    return lake.events_key(lake.HourPartition(T0.date(), 10), TOPIC, 0, start)


def _dead(start: int) -> str:
    return lake.deadletter_key(T0.date(), TOPIC, 0, start)


def _lake(store: FakeStore) -> dict[str, bytes]:
    """The events and dead-letter objects (not the checkpoint, whose owner and time differ per run)."""
    return {key: obj.body for (_, key), obj in store.objects.items()
            if key.startswith((lake.EVENTS_PREFIX, lake.DEADLETTER_PREFIX))}


def _offsets(store: FakeStore, key: str) -> list[int]:
    schema = DEADLETTER_SCHEMA if key.startswith(lake.DEADLETTER_PREFIX) else LAKE_SCHEMA
    return read_parquet(store.get(BUCKET, key).body, schema)["kafka_offset"].to_pylist()


def test_a_batch_across_chunk_boundaries_lands_each_chunk_under_its_own_start_and_checkpoints_the_open_one():
    store = FakeStore()
    _sink_run(store, 25)

    assert sorted(_lake(store)) == sorted([_dead(0), _dead(10), _events(0), _events(10), _events(20)])
    assert {key: _offsets(store, key) for key in _lake(store)} == {
        _events(0): [0, 1, 2, 3, 4, 6, 7, 8, 9], _dead(0): [5],
        _events(10): [10, 11, 12, 13, 14, 15, 16, 17, 19], _dead(10): [18],
        _events(20): [20, 21, 22, 23, 24],
    }
    ckpt = Checkpoint.load(store, BUCKET, TOPIC, 0)
    assert (ckpt.next_offset, ckpt.chunk_records, ckpt.chunk_start, ckpt.chunk_objects) == (25, 10, 20, [_events(20)])


def test_a_chunk_read_to_its_last_offset_is_closed_and_the_next_one_opens_empty():
    store = FakeStore()
    _sink_run(store, 20)

    ckpt = Checkpoint.load(store, BUCKET, TOPIC, 0)
    assert (ckpt.next_offset, ckpt.chunk_start, ckpt.chunk_objects) == (20, 20, [])


def test_a_log_that_starts_mid_chunk_names_its_objects_by_the_chunk_start():
    store = FakeStore()
    _sink_run(store, 17, checkpoint=Checkpoint(TOPIC, 0, next_offset=13, chunk_start=10))

    assert {key: _offsets(store, key) for key in _lake(store)} == {_events(10): [13, 14, 15, 16]}


def test_a_run_resumes_at_the_checkpoint_and_grows_the_open_chunk_objects_in_place():
    store = FakeStore()
    _sink_run(store, 13)
    resumed = PartitionSink(store, SETTINGS, TOPIC, 0)

    assert resumed.next_offset == 13
    resumed.add(*_records(13, 16))
    resumed.flush()
    assert _offsets(store, _events(10)) == [10, 11, 12, 13, 14, 15]


@settings(max_examples=25, deadline=None)
@given(stops=st.lists(st.integers(1, len(LOG)), max_size=4))
def test_where_runs_stop_never_changes_an_object(stops):
    one_run, many_runs = FakeStore(), FakeStore()
    _sink_run(one_run, len(LOG))
    for stop in [*sorted(set(stops)), len(LOG)]:
        _sink_run(many_runs, stop)

    assert _lake(many_runs) == _lake(one_run)
    assert Checkpoint.load(many_runs, BUCKET, TOPIC, 0).next_offset == len(LOG)


def test_changing_chunk_records_after_the_first_run_is_refused_naming_both_sizes():
    store = FakeStore()
    _sink_run(store, 13)

    with pytest.raises(IngestError) as refused:
        PartitionSink(store, _settings(20), TOPIC, 0)
    assert str(refused.value) == (
        "ingest.chunk_records is 20 but engagement[0] was written with 10; changing it would move object boundaries "
        "and duplicate rows. Set it back to 10.")


def test_an_open_chunk_object_named_by_the_checkpoint_but_missing_is_refused():
    store = FakeStore()
    _sink_run(store, 13)
    store.delete(BUCKET, _events(10))

    with pytest.raises(IngestError) as refused:
        PartitionSink(store, SETTINGS, TOPIC, 0)
    assert str(refused.value) == f"s3://{BUCKET}/{_events(10)} is named by the checkpoint but missing; replay the chunk"


def test_a_replay_rebuilds_only_chunks_below_the_checkpoint_reading_no_offset_at_or_above_it():
    store = FakeStore()
    _sink_run(store, 25)
    landed = _lake(store)
    reads: list[tuple[int, int]] = []

    def read(chunk: Chunk, stop: int) -> int:
        reads.append((chunk.start, stop))
        chunk.add(*_records(chunk.start, stop))
        return stop - chunk.start

    report = replay.ReplayReport()
    replay.rebuild_partition(SETTINGS, store, 0, [0, 10, 20, 30], read, report)

    assert reads == [(0, 10), (10, 20), (20, 25)]
    assert (report.chunks, report.records) == ([(0, 0), (0, 10), (0, 20)], 25)
    assert (sorted(report.unchanged), report.changed, report.created) == (sorted(landed), [], [])
    assert _lake(store) == landed
