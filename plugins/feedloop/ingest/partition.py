"""One partition's part of the sink: its open chunk, the chunks sealed behind it, and its commit protocol.

Per partition: claim the checkpoint (compare-and-swap, fencing any older run), write a sealed chunk's
objects (deterministic names, conditional puts: feedloop.ingest.fence), then the checkpoint
(compare-and-swap). Chunks are sealed in offset order and written in that order, so the checkpoint
never names an offset whose object is not on S3.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc

from feedloop.contract.events import format_ts
from feedloop.contract.lake import DEADLETTER_SCHEMA, LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.core.config import IngestSettings, Settings
from feedloop.core.storage import ObjectStore
from feedloop.ingest import failpoints
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk, Limits
from feedloop.ingest.errors import IngestError
from feedloop.ingest.fence import Claim
from feedloop.ingest.writer import parquet_bytes, read_parquet

# S3 puts overlap with encoding the next object (boto3 clients are thread-safe).
_UPLOADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="feedloop-upload")


@dataclass
class PartitionStats:
    start_offset: int
    next_offset: int
    records: int = 0
    bytes: int = 0
    events: int = 0
    deadletters: int = 0
    min_event_ts: str | None = None
    max_event_ts: str | None = None


def limits(cfg: IngestSettings) -> Limits:
    return Limits(timedelta(hours=cfg.max_lateness_hours), timedelta(minutes=cfg.max_skew_minutes))


class PartitionSink:
    """The open chunk of one partition and its part of the commit protocol."""

    def __init__(self, store: ObjectStore, settings: Settings, topic: str, partition: int, *, owner: str = "",
                 checkpoint: Checkpoint | None = None):
        self.store = store
        self.bucket = settings.s3.lake_bucket
        self.cfg = settings.ingest
        self.topic, self.partition = topic, partition
        loaded = checkpoint or Checkpoint.load(store, self.bucket, topic, partition) or Checkpoint(topic, partition)
        self.chunk_records = self._chunk_records(loaded)
        self.claim = Claim(store, self.bucket, loaded, owner or f"sink:{uuid.uuid4().hex[:12]}")  # fences older runs
        self.generation = self.checkpoint.generation  # read by the decoder while the writer moves the checkpoint
        self.chunk = self._open_chunk(self.checkpoint.chunk_start, self.checkpoint.next_offset)
        self._load_open_chunk()
        self.stats = PartitionStats(self.checkpoint.next_offset, self.checkpoint.next_offset)
        self.sealed: list[Chunk] = []   # full (or cut short) chunks waiting to be written, oldest first
        self.written: list[str] = []

    @property
    def checkpoint(self) -> Checkpoint:
        return self.claim.checkpoint

    def _chunk_records(self, checkpoint: Checkpoint) -> int:
        recorded = checkpoint.chunk_records or self.cfg.chunk_records
        if recorded != self.cfg.chunk_records:
            raise IngestError(
                f"ingest.chunk_records is {self.cfg.chunk_records} but {self.topic}[{self.partition}] was written with "
                f"{recorded}; changing it would move object boundaries and duplicate rows. Set it back to {recorded}."
            )
        return recorded

    def _open_chunk(self, start: int, next_offset: int) -> Chunk:
        return Chunk(self.topic, self.partition, start, self.chunk_records, limits(self.cfg), next_offset,
                     generation=self.generation)

    def _load_open_chunk(self) -> None:
        """Rows of the open chunk already in S3 (below the checkpoint), so its objects grow, never fork."""
        below = self.checkpoint.next_offset
        for key in self.checkpoint.chunk_objects:
            found = self.claim.read(key)
            if found is None:
                raise IngestError(f"s3://{self.bucket}/{key} is named by the checkpoint but missing; replay the chunk")
            dead = key.startswith(lake.DEADLETTER_PREFIX)
            table = read_parquet(found, DEADLETTER_SCHEMA if dead else LAKE_SCHEMA)
            table = table.filter(pc.less(table["kafka_offset"], below))
            (self.chunk.dead if dead else self.chunk.rows).append(table)

    @property
    def next_offset(self) -> int:
        return self.chunk.next_offset

    def add(self, offsets: list[int], timestamps_ms: list[int], values: list[bytes]) -> None:
        """Route a fetched batch (ascending offsets) into chunks; a chunk is sealed as soon as it is full."""
        i = 0
        while i < len(offsets):
            chunk_start = offsets[i] - offsets[i] % self.chunk_records
            if chunk_start != self.chunk.start:
                self.seal()  # an offset gap (compaction, transaction markers) left the open chunk short
                self.chunk = self._open_chunk(chunk_start, offsets[i])
            j = bisect_left(offsets, self.chunk.end, i)
            self._add_slice(offsets[i:j], timestamps_ms[i:j], values[i:j])
            if self.chunk.next_offset >= self.chunk.end:
                self.seal()
                self.chunk = self._open_chunk(self.chunk.end, self.chunk.end)
            i = j

    def _add_slice(self, offsets: list[int], timestamps_ms: list[int], values: list[bytes]) -> None:
        rows_before, dead_before = len(self.chunk.rows), len(self.chunk.dead)
        self.chunk.add(offsets, timestamps_ms, values)
        new_rows = self.chunk.rows[rows_before:]
        s = self.stats
        s.records += len(offsets)
        s.bytes += sum(map(len, values))
        s.events += sum(t.num_rows for t in new_rows)
        s.deadletters += sum(t.num_rows for t in self.chunk.dead[dead_before:])
        s.next_offset = self.chunk.next_offset
        for t in new_rows:
            if t.num_rows:
                lo, hi = pc.min_max(t["event_ts"]).values()
                s.min_event_ts = min(filter(None, (s.min_event_ts, format_ts(lo.as_py()))))
                s.max_event_ts = max(filter(None, (s.max_event_ts, format_ts(hi.as_py()))))

    def seal(self) -> None:
        """Queue the open chunk for writing if it holds records not yet written (full, a gap, idle or the end).

        What is queued is a copy of the chunk as it is now: the chunk may stay open and grow (an idle log's
        flush) while the writer writes the copy, whose objects and next offset the checkpoint then names."""
        if self.chunk.dirty:
            self.chunk.dirty = False
            self.sealed.append(replace(self.chunk, rows=list(self.chunk.rows), dead=list(self.chunk.dead)))

    def take_sealed(self) -> list[Chunk]:
        """The chunks sealed since the last call, oldest first: they must be written in this order."""
        sealed, self.sealed = self.sealed, []
        return sealed

    def flush(self) -> None:
        """Seal the open chunk and write every sealed one, here and now (the pipeline does this off the poll thread)."""
        self.seal()
        for chunk in self.take_sealed():
            self.write(chunk)

    def write(self, chunk: Chunk) -> None:
        """Write a sealed chunk's objects, then the checkpoint (data first, position last).

        Called for one partition's chunks in the order they were sealed, never two at once.
        """
        objects = {**chunk.events_objects(), **chunk.deadletter_objects()}
        uploads = []
        for key, table in sorted(objects.items()):
            body = parquet_bytes(table, zstd_level=self.cfg.zstd_level)
            uploads.append(_UPLOADS.submit(self.claim.put, key, body))
            if len(uploads) == 1:
                uploads[0].result()
                failpoints.hit(failpoints.MID_UPLOAD)
        for upload in uploads:
            upload.result()  # every object is durable before the checkpoint names it
        self.written.extend(sorted(objects))
        failpoints.hit(failpoints.AFTER_UPLOAD)
        complete = chunk.next_offset >= chunk.end
        self.claim.commit(replace(
            self.checkpoint,
            next_offset=chunk.next_offset,
            chunk_records=self.chunk_records,
            chunk_start=chunk.end if complete else chunk.start,
            chunk_objects=[] if complete else sorted(objects),
            updated_at=format_ts(datetime.now(timezone.utc)),
        ))
