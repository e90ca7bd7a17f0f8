"""Re-ingest an offset range or a time range from Kafka and rewrite the same objects.

Why this is safe: objects are pure functions of (topic, partition, chunk offsets), so a replay
rebuilds every affected chunk from its first offset and rewrites the very same keys: the same
bytes if the log is unchanged, nothing duplicated ever. A replay reads only below the
partition's checkpoint and writes each object with a compare-and-swap on the ETag it read
first, so it can never shrink an open chunk that the sink is appending to at the same time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from feedloop import lake
from feedloop.config import Settings
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk
from feedloop.ingest.sink import IngestError, limits
from feedloop.ingest.writer import parquet_bytes
from feedloop.storage import ObjectStore, PreconditionFailed


@dataclass
class ReplayReport:
    chunks: list[tuple[int, int]] = field(default_factory=list)    # (partition, chunk start)
    unchanged: list[str] = field(default_factory=list)             # rewritten with identical bytes
    changed: list[str] = field(default_factory=list)               # rewritten with different bytes
    created: list[str] = field(default_factory=list)               # did not exist before
    raced: list[str] = field(default_factory=list)                 # the sink rewrote it meanwhile: left as is
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
    return _replay(settings, store, chunks)


def replay_time(settings: Settings, *, start: datetime, end: datetime, store: ObjectStore | None = None) -> ReplayReport:
    """Rebuild every chunk with events in the event-hour partitions of [start, end)."""
    if end <= start:
        raise IngestError(f"replay time range: end ({end}) must be after start ({start})")
    store = store or ObjectStore.from_settings(settings)
    first_hour = lake.HourPartition.of(start)
    last_hour = lake.HourPartition.of(end - timedelta(microseconds=1))
    chunks = set()
    day: date = start.date()
    while day <= last_hour.day:
        for key in store.list_keys(settings.s3.lake_bucket, lake.day_prefix(day)):
            ref = lake.parse_key(key)
            if ref and ref.topic == settings.kafka.topic and ref.hour and first_hour <= ref.hour <= last_hour:
                chunks.add((ref.partition, ref.chunk_start))
        day += timedelta(days=1)
    return _replay(settings, store, sorted(chunks))


def _checkpoint(settings: Settings, store: ObjectStore, partition: int) -> Checkpoint:
    ckpt = Checkpoint.load(store, settings.s3.lake_bucket, settings.kafka.topic, partition)
    if ckpt is None:
        raise IngestError(f"{settings.kafka.topic}[{partition}] has never been ingested; nothing to replay")
    return ckpt


def _replay(settings: Settings, store: ObjectStore, chunks: list[tuple[int, int]]) -> ReplayReport:
    from kafka import TopicPartition

    from feedloop.streams import consumer

    report = ReplayReport()
    t0 = time.perf_counter()
    bucket, topic = settings.s3.lake_bucket, settings.kafka.topic
    kafka = consumer(settings.kafka, fetch_max_bytes=settings.ingest.max_poll_bytes)
    try:
        for partition, chunk_start in chunks:
            ckpt = _checkpoint(settings, store, partition)
            size = ckpt.chunk_records or settings.ingest.chunk_records
            if chunk_start >= ckpt.next_offset:
                continue  # not ingested yet: the sink will write it
            chunk = Chunk(topic, partition, chunk_start, size, limits(settings.ingest))
            tp = TopicPartition(topic, partition)
            kafka.assign([tp])
            kafka.seek(tp, chunk_start)
            report.records += _read_chunk(kafka, chunk, min(chunk.end, ckpt.next_offset), settings)
            objects = {**chunk.events_objects(), **chunk.deadletter_objects()}
            for key, table in sorted(objects.items()):
                _rewrite(store, bucket, key, parquet_bytes(table, zstd_level=settings.ingest.zstd_level), report)
            report.chunks.append((partition, chunk_start))
    finally:
        kafka.close(autocommit=False)
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _rewrite(store: ObjectStore, bucket: str, key: str, body: bytes, report: ReplayReport) -> None:
    """Put with a compare-and-swap on what was there, so a concurrent sink flush always wins."""
    before = store.get(bucket, key)
    try:
        if before is None:
            store.put(bucket, key, body, if_none_match=True)
            report.created.append(key)
        elif before.body == body:
            report.unchanged.append(key)
        else:
            store.put(bucket, key, body, if_match=before.etag)
            report.changed.append(key)
    except PreconditionFailed:
        report.raced.append(key)


def _read_chunk(kafka, chunk: Chunk, stop: int, settings: Settings) -> int:
    """Read the chunk's offsets below `stop` (or until the log ends: polls come back empty)."""
    read, empty = 0, 0
    while chunk.next_offset < stop and empty < settings.ingest.empty_polls_to_stop:
        polled = kafka.poll(timeout_ms=settings.ingest.poll_timeout_ms, max_records=20_000)
        empty = 0 if polled else empty + 1
        for records in polled.values():
            mine = [r for r in records if chunk.start <= r.offset < stop]
            if mine:
                chunk.add([r.offset for r in mine], [r.timestamp for r in mine],
                          [r.value if r.value is not None else b"" for r in mine])
                read += len(mine)
    return read
