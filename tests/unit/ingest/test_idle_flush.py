"""The sink's poll loop flushes the open chunks at the first empty poll of a run, and only then.

Why once: on a trickle, where empty polls alternate with records, a flush at every empty poll would rewrite the
growing open chunk again and again; at the first, a run's last records land while it waits out its final polls.
"""

from __future__ import annotations

from collections import namedtuple

from feedloop.core import layout as lake
from feedloop.ingest import sink
from feedloop.ingest.partition import PartitionSink
from feedloop.ingest.pipeline import Pipeline
from tests.unit.ingest.fakestore import FakeStore
from tests.unit.ingest.test_pipeline import BUCKET, LOG, SETTINGS, TOPIC

Partition = namedtuple("Partition", "partition")
Record = namedtuple("Record", "offset timestamp value")


class ScriptedLog:
    """A consumer of partition 0 answering from a script: poll() a range of LOG's offsets, or None for an empty
    poll; the log's end is `end`, else the script's last offset, from the start (records a busy broker has not
    returned yet)."""

    def __init__(self, script: list[tuple[int, int] | None], *, end: int | None = None):
        self.script = list(script)
        self.offset = 0
        self.end = end if end is not None else max((step[1] for step in script if step), default=0)

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        step = self.script.pop(0) if self.script else None
        if step is None:
            return {}
        self.offset = step[1]
        return {Partition(0): [Record(*LOG[i]) for i in range(*step)]}

    def assignment(self) -> set:
        return {Partition(0)}

    def end_offsets(self, partitions: list) -> dict:
        return {tp: self.end for tp in partitions}

    def position(self, tp) -> int:
        return self.offset


class CountingStore(FakeStore):
    """Counts the checkpoint's writes: one per chunk (or part of one) written."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: list[int] = []

    def put(self, bucket: str, key: str, body: bytes, **kwargs) -> str:
        if key == lake.checkpoint_key(TOPIC, 0):
            self.checkpoints.append(len(body))
        return super().put(bucket, key, body, **kwargs)


def test_only_the_first_empty_poll_of_a_run_flushes_the_open_chunk():
    store = CountingStore()
    partition = PartitionSink(store, SETTINGS, TOPIC, 0)
    claimed = len(store.checkpoints)
    pipeline = Pipeline({0: partition}, depth=2)
    trickle = ScriptedLog([(0, 5), None, (5, 9), None, (9, 14), None, None])  # chunk_records 20: one open chunk
    report = sink.RunReport("run", TOPIC, "")

    assert sink._consume(trickle, pipeline, SETTINGS.ingest, report) == "empty_poll"
    pipeline.close()

    # the flush after offset 5, then close after offset 14: not a rewrite at every empty poll
    assert len(store.checkpoints) - claimed == 2 and report.records == 14
    assert partition.checkpoint.next_offset == 14 and store.get(BUCKET, lake.checkpoint_key(TOPIC, 0)) is not None


def test_empty_polls_do_not_end_a_run_that_has_not_reached_the_end_of_the_log():
    """A busy broker answered two fetches with nothing while it held the day's records: the run had stopped there
    and the retrain after it saw a seventh of the day."""
    pipeline = Pipeline({0: PartitionSink(FakeStore(), SETTINGS, TOPIC, 0)}, depth=2)
    slow = ScriptedLog([(0, 5), None, None, None, (5, 30), None, None])
    report = sink.RunReport("run", TOPIC, "")

    assert sink._consume(slow, pipeline, SETTINGS.ingest, report) == "empty_poll"
    pipeline.close()

    assert report.records == 30 and slow.offset == slow.end


def test_a_broker_that_reports_records_but_hands_none_out_ends_the_run_as_silent():
    """bench/loop.py at eight times the traffic: the broker reported 13,000-16,500 records per partition past the
    run's position and answered ten minutes of fetches with nothing; the run passed with half the day."""
    pipeline = Pipeline({0: PartitionSink(FakeStore(), SETTINGS, TOPIC, 0)}, depth=2)
    stuck = ScriptedLog([(0, 5)], end=30)   # then nothing, while the log's end stays at 30
    report = sink.RunReport("run", TOPIC, "")
    cfg = SETTINGS.ingest.model_copy(update={"max_silent_seconds": 0.05})

    assert sink._consume(stuck, pipeline, cfg, report) == "broker_silent"
    pipeline.close()

    assert report.records == 5 and report.unread == {0: 25}   # what it landed is written; what it could not, named
