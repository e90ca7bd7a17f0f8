"""The sink's writer pipeline: the same objects and checkpoints as writing in line, bounded, and loud on errors.

The poll thread hands batches to the pipeline; a decoder thread cuts them into chunks and a writer
thread writes each sealed chunk, then its checkpoint. These cases run it on an in-memory S3 whose
object puts can be held (back-pressure) or made to fail (an error must reach the poller).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from feedloop.core import layout as lake
from feedloop.core.config import load_settings
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.partition import PartitionSink
from feedloop.ingest.pipeline import Pipeline
from tests.support.kafka_helpers import event
from tests.unit.ingest.fakestore import FakeStore

TOPIC = "engagement"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
LOG = [(i, int((T0 + timedelta(seconds=30 * i + 2)).timestamp() * 1000),
        b"not json" if i % 11 == 3 else orjson.dumps(event(i, T0 + timedelta(seconds=30 * i))))
       for i in range(250)]  # three event hours and a dead letter now and then
BASE = load_settings(environ={})
SETTINGS = BASE.model_copy(update={"ingest": BASE.ingest.model_copy(update={"chunk_records": 20})})
BUCKET = SETTINGS.s3.lake_bucket
WAIT = 10  # seconds: a bound on a hang, never reached when the pipeline works


class HeldStore(FakeStore):
    """Object puts wait until `release` is set; the `fail_at`-th object put (0-based) raises."""

    def __init__(self, *, fail_at: int | None = None) -> None:
        super().__init__()
        self.release = threading.Event()
        self.release.set()
        self.fail_at = fail_at
        self.object_puts = 0
        self.waiting = threading.Event()
        self.lock = threading.Lock()  # a chunk's objects are put from several upload threads

    def put(self, bucket: str, key: str, body: bytes, **kwargs) -> str:
        if not key.startswith(lake.checkpoint_key(TOPIC, 0).rsplit("/", 1)[0]):
            self.waiting.set()
            assert self.release.wait(WAIT), "held too long"
            with self.lock:
                n, self.object_puts = self.object_puts, self.object_puts + 1
            if n == self.fail_at:
                raise OSError("S3 said 503 SlowDown")
        return super().put(bucket, key, body, **kwargs)


def _batches(start: int, stop: int, size: int):
    for i in range(start, stop, size):
        part = LOG[i:min(i + size, stop)]
        yield [r[0] for r in part], [r[1] for r in part], [r[2] for r in part]


def _objects(store: FakeStore) -> dict[str, bytes]:
    return {k: o.body for (_, k), o in store.objects.items() if not k.startswith("_ingest/")}


def _in_line(upto: int, batch: int) -> FakeStore:
    store = FakeStore()
    sink = PartitionSink(store, SETTINGS, TOPIC, 0)
    for offsets, stamps, values in _batches(0, upto, batch):
        sink.add(offsets, stamps, values)
    sink.flush()
    return store


@pytest.mark.parametrize("upto,batch,depth", [
    pytest.param(250, 7, 1, id="batches-smaller-than-a-chunk-depth-1"),
    pytest.param(250, 45, 2, id="batches-across-chunks-depth-2"),
    pytest.param(233, 250, 3, id="one-batch-ending-in-an-open-chunk"),
])
def test_the_pipeline_leaves_the_same_objects_and_checkpoint_as_writing_in_line(upto, batch, depth):
    store = FakeStore()
    sink = PartitionSink(store, SETTINGS, TOPIC, 0)
    pipeline = Pipeline({0: sink}, depth=depth)
    for offsets, stamps, values in _batches(0, upto, batch):
        pipeline.submit(0, offsets, stamps, values)
    pipeline.close()

    expected = _in_line(upto, batch)
    assert _objects(store) == _objects(expected)
    ckpt, want = (Checkpoint.load(s, BUCKET, TOPIC, 0) for s in (store, expected))
    assert (ckpt.next_offset, ckpt.chunk_start, ckpt.chunk_objects) == (want.next_offset, want.chunk_start,
                                                                         want.chunk_objects)
    assert ckpt.next_offset == upto and sink.checkpoint.next_offset == upto


def test_the_poller_blocks_while_depth_chunks_wait_for_a_slow_store_and_goes_on_when_it_drains():
    store = HeldStore()
    store.release.clear()
    pipeline = Pipeline({0: PartitionSink(store, SETTINGS, TOPIC, 0)}, depth=1)
    submitted = []

    def poll() -> None:
        for offsets, stamps, values in _batches(0, 200, 20):  # one full chunk a batch
            pipeline.submit(0, offsets, stamps, values)
            submitted.append(offsets[0])

    poller = threading.Thread(target=poll)
    poller.start()
    assert store.waiting.wait(WAIT)
    poller.join(0.5)
    # held: one chunk being written, one waiting for the writer, one batch waiting for the decoder,
    # one batch being decoded (its chunk blocked on the hand-off); the poller itself waits on the next
    assert poller.is_alive() and len(submitted) <= 4, submitted
    store.release.set()
    poller.join(WAIT)
    pipeline.close()
    assert len(submitted) == 10 and Checkpoint.load(store, BUCKET, TOPIC, 0).next_offset == 200


def test_a_failed_upload_is_raised_to_the_poller_and_no_later_chunk_is_checkpointed():
    store = HeldStore(fail_at=3)
    sink = PartitionSink(store, SETTINGS, TOPIC, 0)
    pipeline = Pipeline({0: sink}, depth=2)
    with pytest.raises(OSError, match="503 SlowDown"):
        try:
            for offsets, stamps, values in _batches(0, 250, 10):
                pipeline.submit(0, offsets, stamps, values)
        except OSError:
            pipeline.abort()  # as sink.run does when the poller's call raised
            raise
        pipeline.close()
    ckpt = Checkpoint.load(store, BUCKET, TOPIC, 0)
    assert ckpt.next_offset < 250 and ckpt.chunk_start == ckpt.next_offset  # only whole chunks before the failure
    # the failed chunk may have left objects (a retry rewrites them); no chunk after it has any
    assert all(lake.parse_key(k).chunk_start <= ckpt.next_offset for k in _objects(store)), sorted(_objects(store))


def test_an_error_in_the_decoder_thread_is_raised_by_close_and_nothing_is_written():
    store = FakeStore()
    pipeline = Pipeline({0: PartitionSink(store, SETTINGS, TOPIC, 0)}, depth=2)
    pipeline.submit(0, *next(_batches(0, 10, 10)))
    pipeline.submit(7, *next(_batches(10, 20, 10)))  # a partition this run was not given
    with pytest.raises(KeyError, match="7"):
        pipeline.close()
    assert not _objects(store) and Checkpoint.load(store, BUCKET, TOPIC, 0).next_offset == 0


def test_an_aborted_pipeline_writes_nothing_that_was_still_queued():
    store = HeldStore()
    store.release.clear()
    pipeline = Pipeline({0: PartitionSink(store, SETTINGS, TOPIC, 0)}, depth=2)
    for offsets, stamps, values in _batches(0, 40, 20):
        pipeline.submit(0, offsets, stamps, values)
    assert store.waiting.wait(WAIT)
    threading.Timer(0.2, store.release.set).start()
    pipeline.abort()
    ckpt = Checkpoint.load(store, BUCKET, TOPIC, 0)
    assert ckpt.next_offset == 20  # the chunk being written completes, the one queued behind it is dropped


def test_an_idle_flush_lands_the_open_chunk_and_later_records_grow_its_objects():
    store = FakeStore()
    sink = PartitionSink(store, SETTINGS, TOPIC, 0)
    pipeline = Pipeline({0: sink}, depth=2)
    for offsets, stamps, values in _batches(0, 53, 9):  # two full chunks, then 13 records of the third
        pipeline.submit(0, offsets, stamps, values)
    pipeline.flush()
    deadline = time.monotonic() + WAIT
    while Checkpoint.load(store, BUCKET, TOPIC, 0).next_offset < 53 and time.monotonic() < deadline:
        time.sleep(0.01)
    flushed = Checkpoint.load(store, BUCKET, TOPIC, 0)
    # landed before the run ends: a crash now loses nothing, and the chunk stays open where it was
    assert (flushed.next_offset, flushed.chunk_start) == (53, 40) and flushed.chunk_objects
    assert _objects(store) == _objects(_in_line(53, 9))
    for offsets, stamps, values in _batches(53, 250, 9):
        pipeline.submit(0, offsets, stamps, values)
    pipeline.close()
    assert _objects(store) == _objects(_in_line(250, 9))  # the flushed objects grew under their names
    assert Checkpoint.load(store, BUCKET, TOPIC, 0).next_offset == 250
