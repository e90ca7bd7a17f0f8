"""Re-ingest an offset range or a time range from Kafka and rewrite the same objects.

Why this is safe: objects are pure functions of (topic, partition, chunk offsets), so a replay
rebuilds every affected chunk from its first offset and rewrites the very same keys: the same
bytes if the log is unchanged, nothing duplicated ever. A replay first claims the partition's
checkpoint (compare-and-swap), reads only below it, and writes each object through that claim
(feedloop.ingest.fence): a sink run that read the checkpoint before the claim can no longer
commit, one that claims it after makes the replay's next write lose (left to the sink, `raced`),
so a replay can never shrink an object below a checkpoint. A replay checks the log first like a
sink run (feedloop.ingest.log_range); objects of an earlier log generation (before a
reset-checkpoint) and chunks retention has begun to delete cannot be rebuilt and are left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import groupby
from typing import Callable

from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.contract.events import format_ts
from feedloop.ingest import log_range
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk
from feedloop.ingest.errors import Fenced, IngestError
from feedloop.ingest.fence import Claim
from feedloop.ingest.partition import limits
from feedloop.ingest.writer import parquet_bytes
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import consumer

ReadChunk = Callable[[Chunk, int], int]  # fill the chunk with its records below the offset given; returns how many


@dataclass
class ReplayReport:
    chunks: list[tuple[int, int]] = field(default_factory=list)    # (partition, chunk start)
    unchanged: list[str] = field(default_factory=list)             # rewritten with identical bytes
    changed: list[str] = field(default_factory=list)               # rewritten with different bytes
    created: list[str] = field(default_factory=list)               # did not exist before
    raced: list[str] = field(default_factory=list)                 # a sink claimed the partition meanwhile: left to it
    gone: list[tuple[int, int]] = field(default_factory=list)      # (partition, chunk start) retention deleted: left
    other_log: list[str] = field(default_factory=list)             # from a log generation before a reset: left alone
    records: int = 0
    seconds: float = 0.0


def replay_offsets(settings: Settings, *, partition: int, start: int, end: int,
                   store: ObjectStore | None = None) -> ReplayReport:
    """Rebuild every chunk of `partition` that overlaps offsets [start, end)."""
    if end <= start:
        raise IngestError(f"replay offsets: end ({end}) must be greater than start ({start})")
    store = store or ObjectStore.from_settings(settings)
    ckpt = _checkpoint(settings, store, partition)
    size = ckpt.chunk_records or settings.ingest.chunk_records
    first = start - start % size
    chunks = [(partition, c) for c in range(first, end, size)]
    return _replay(settings, store, chunks, ReplayReport())


def replay_time(settings: Settings, *, start: datetime, end: datetime, store: ObjectStore | None = None) -> ReplayReport:
    """Rebuild every chunk with events in the event-hour partitions of [start, end)."""
    if end <= start:
        raise IngestError(f"replay time range: end ({end}) must be after start ({start})")
    store = store or ObjectStore.from_settings(settings)
    first_hour = lake.HourPartition.of(start)
    last_hour = lake.HourPartition.of(end - timedelta(microseconds=1))
    refs = []
    day: date = start.date()
    while day <= last_hour.day:
        for key in store.list_keys(settings.s3.lake_bucket, lake.day_prefix(day)):
            ref = lake.parse_key(key)
            if ref and ref.topic == settings.kafka.topic and ref.hour and first_hour <= ref.hour <= last_hour:
                refs.append(ref)
        day += timedelta(days=1)
    generation = {p: _checkpoint(settings, store, p).generation for p in {r.partition for r in refs}}
    report = ReplayReport(other_log=sorted(r.key for r in refs if r.generation != generation[r.partition]))
    chunks = {(r.partition, r.chunk_start) for r in refs if r.generation == generation[r.partition]}
    return _replay(settings, store, sorted(chunks), report)


def _checkpoint(settings: Settings, store: ObjectStore, partition: int) -> Checkpoint:
    ckpt = Checkpoint.load(store, settings.s3.lake_bucket, settings.kafka.topic, partition)
    if ckpt is None:
        raise IngestError(f"{settings.kafka.topic}[{partition}] has never been ingested; nothing to replay")
    return ckpt


def _replay(settings: Settings, store: ObjectStore, chunks: list[tuple[int, int]], report: ReplayReport) -> ReplayReport:
    from kafka import TopicPartition

    t0 = time.perf_counter()
    logs = _logs(settings, store, sorted({p for p, _ in chunks}))
    kafka = consumer(settings.kafka, fetch_max_bytes=settings.ingest.max_poll_bytes)

    def read(chunk: Chunk, stop: int) -> int:
        tp = TopicPartition(chunk.topic, chunk.partition)
        kafka.assign([tp])
        kafka.seek(tp, chunk.start)
        return _read_chunk(kafka, chunk, stop, settings)

    try:
        for partition, group in groupby(chunks, key=lambda c: c[0]):
            starts = [start for _, start in group]
            report.gone += [(partition, s) for s in starts if s < logs[partition].start]
            rebuild_partition(settings, store, partition, [s for s in starts if s >= logs[partition].start], read,
                              report)
    finally:
        kafka.close(autocommit=False)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _logs(settings: Settings, store: ObjectStore, partitions: list[int]) -> dict[int, log_range.LogRange]:
    """Each partition's log, checked against its checkpoint: a chunk rebuilt from another log (reset, recreated)
    would replace landed rows with other records, one partly deleted by retention would lose rows."""
    if not partitions:
        return {}
    ckpts = {p: _checkpoint(settings, store, p) for p in partitions}
    logs = log_range.read(settings.kafka, settings.kafka.topic, {p: c.next_offset for p, c in ckpts.items()},
                          poll_timeout_ms=settings.ingest.poll_timeout_ms, polls=settings.ingest.empty_polls_to_stop)
    for p, ckpt in ckpts.items():
        if ckpt.next_offset >= logs[p].start:
            log_range.check(ckpt, logs[p])
    return logs


def rebuild_partition(settings: Settings, store: ObjectStore, partition: int, chunk_starts: list[int],
                      read: ReadChunk, report: ReplayReport) -> None:
    """Claim the partition's checkpoint, then rebuild each chunk below it and rewrite its objects through the claim."""
    bucket = settings.s3.lake_bucket
    claim = Claim(store, bucket, _checkpoint(settings, store, partition),
                  f"replay:{format_ts(datetime.now(timezone.utc))}")
    ckpt = claim.checkpoint
    size = ckpt.chunk_records or settings.ingest.chunk_records
    for chunk_start in chunk_starts:
        if chunk_start >= ckpt.next_offset:
            continue  # not ingested yet: the sink will write it
        chunk = Chunk(ckpt.topic, partition, chunk_start, size, limits(settings.ingest), generation=ckpt.generation)
        report.records += read(chunk, min(chunk.end, ckpt.next_offset))
        objects = sorted({**chunk.events_objects(), **chunk.deadletter_objects()}.items())
        for i, (key, table) in enumerate(objects):
            try:
                outcome = claim.rewrite(key, parquet_bytes(table, zstd_level=settings.ingest.zstd_level))
            except Fenced:
                report.raced.extend(k for k, _ in objects[i:])
                return  # a sink run claimed the partition: everything from here on is its to write
            getattr(report, outcome).append(key)
        report.chunks.append((partition, chunk_start))


def _read_chunk(kafka, chunk: Chunk, stop: int, settings: Settings) -> int:
    """Read the chunk's offsets below `stop` (or until the log ends).

    Empty polls end the read only where the consumer has reached the log's end: the chunk's objects are then
    rewritten from what was read, so a read that a busy broker cut short would replace landed rows with fewer.
    Records that do not come within ingest.max_run_seconds fail the replay before this chunk is rewritten."""
    cfg = settings.ingest
    read, empty = 0, 0
    deadline = time.monotonic() + cfg.max_run_seconds
    while chunk.next_offset < stop:
        polled = kafka.poll(timeout_ms=cfg.poll_timeout_ms, max_records=20_000)
        if not polled:
            empty += 1
            if empty < cfg.empty_polls_to_stop:
                continue
            if not log_range.unread(kafka, stop=stop):
                break
            if time.monotonic() >= deadline:
                raise IngestError(f"{chunk.topic}[{chunk.partition}]: offsets {chunk.next_offset}..{stop - 1} did not "
                                  f"come within ingest.max_run_seconds={cfg.max_run_seconds}; chunk {chunk.start} was "
                                  "not rewritten. Replay again when the broker answers")
            empty = 0
            continue
        empty = 0
        for records in polled.values():
            mine = [r for r in records if chunk.start <= r.offset < stop]
            if mine:
                chunk.add([r.offset for r in mine], [r.timestamp for r in mine],
                          [r.value if r.value is not None else b"" for r in mine])
                read += len(mine)
    return read
