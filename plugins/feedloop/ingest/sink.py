"""The bounded sink run: Kafka -> Parquet objects on S3, exactly once.

Commit protocol, per partition: claim the checkpoint (compare-and-swap, fencing any older run),
write the chunk's objects (deterministic names, conditional puts: feedloop.ingest.fence), then the
checkpoint (compare-and-swap), then commit the Kafka offsets. A crash anywhere leaves at worst objects that a
retry rewrites with the same names, so a row is never stored twice; the checkpoint (read
first on start) means a lost Kafka commit never re-adds data either.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Iterable

import pyarrow.compute as pc

from feedloop.contract.lake import DEADLETTER_SCHEMA, LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.core.config import IngestSettings, Settings
from feedloop.contract.events import format_ts
from feedloop.ingest import failpoints, log_range
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.chunk import Chunk, Limits
from feedloop.ingest.errors import IngestError, LogMismatch
from feedloop.ingest.fence import Claim
from feedloop.ingest.writer import parquet_bytes, read_parquet
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import consumer


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


@dataclass
class RunReport:
    run_id: str
    topic: str
    started_at: str
    finished_at: str = ""
    stop_reason: str = ""
    records: int = 0
    bytes: int = 0
    deadletters: int = 0
    partitions: dict[int, PartitionStats] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)
    hours: list[str] = field(default_factory=list)        # event-hour partitions touched (S3 prefixes)
    deadletter_objects: list[str] = field(default_factory=list)

    @property
    def bad_ratio(self) -> float:
        return self.deadletters / self.records if self.records else 0.0


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
        self.chunk = self._open_chunk(self.checkpoint.chunk_start, self.checkpoint.next_offset)
        self._load_open_chunk()
        self.stats = PartitionStats(self.checkpoint.next_offset, self.checkpoint.next_offset)
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
                     generation=self.checkpoint.generation)

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
        """Route a fetched batch (ascending offsets) into chunks; completed chunks are flushed at once."""
        i = 0
        while i < len(offsets):
            chunk_start = offsets[i] - offsets[i] % self.chunk_records
            if chunk_start != self.chunk.start:
                self.flush()
                self.chunk = self._open_chunk(chunk_start, offsets[i])
            j = i
            end = self.chunk.end
            while j < len(offsets) and offsets[j] < end:
                j += 1
            self._add_slice(offsets[i:j], timestamps_ms[i:j], values[i:j])
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

    def flush(self) -> None:
        """Write the current chunk's objects, then the checkpoint (data first, position last)."""
        if not self.chunk.dirty:
            return
        objects = {**self.chunk.events_objects(), **self.chunk.deadletter_objects()}
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
        complete = self.chunk.next_offset >= self.chunk.end
        self.claim.commit(replace(
            self.checkpoint,
            next_offset=self.chunk.next_offset,
            chunk_records=self.chunk_records,
            chunk_start=self.chunk.end if complete else self.chunk.start,
            chunk_objects=[] if complete else sorted(objects),
            updated_at=format_ts(datetime.now(timezone.utc)),
        ))
        self.chunk.dirty = False


def run(settings: Settings, *, run_id: str | None = None, partitions: Iterable[int] | None = None,
        store: ObjectStore | None = None) -> RunReport:
    """One bounded sink run: read until the polls are empty, max records or max wall time."""
    from kafka import OffsetAndMetadata, TopicPartition

    cfg, topic = settings.ingest, settings.kafka.topic
    store = store or ObjectStore.from_settings(settings)
    started = datetime.now(timezone.utc)
    report = RunReport(run_id or f"manual__{started.strftime('%Y%m%dT%H%M%S%fZ')}", topic, format_ts(started))
    kafka = consumer(settings.kafka, group_id=cfg.group_id, fetch_max_bytes=cfg.max_poll_bytes,
                     max_poll_records=20_000)
    try:
        wanted = sorted(partitions) if partitions is not None else sorted(kafka.partitions_for_topic(topic) or [])
        if not wanted:
            raise IngestError(f"topic {topic!r} has no partitions on {settings.kafka.bootstrap_servers}; is it created?")
        tps = {p: TopicPartition(topic, p) for p in wanted}
        kafka.assign(list(tps.values()))
        checkpoints = _checkpoints_in_the_log(settings, store, wanted)
        sinks = {p: PartitionSink(store, settings, topic, p, owner=report.run_id, checkpoint=checkpoints[p])
                 for p in wanted}
        for p, sink in sinks.items():
            kafka.seek(tps[p], sink.next_offset)
        report.stop_reason = _consume(kafka, sinks, cfg, report)
        for sink in sinks.values():
            sink.flush()
        failpoints.hit(failpoints.AFTER_CHECKPOINT)
        kafka.commit({tps[p]: OffsetAndMetadata(s.next_offset, "", -1) for p, s in sinks.items()})
        failpoints.hit(failpoints.AFTER_COMMIT)
    finally:
        kafka.close(autocommit=False)
    _finish(report, sinks)
    store.put_json(settings.s3.lake_bucket, lake.run_manifest_key(report.run_id), asdict(report))
    if report.records and report.bad_ratio > cfg.max_bad_ratio:
        raise IngestError(
            f"{report.deadletters} of {report.records} records ({report.bad_ratio:.1%}) were dead-lettered, above "
            f"ingest.max_bad_ratio={cfg.max_bad_ratio:.1%}. They are saved with their reasons under "
            f"s3://{settings.s3.lake_bucket}/{lake.DEADLETTER_PREFIX} ({', '.join(report.deadletter_objects[:3])}"
            f"{', ...' if len(report.deadletter_objects) > 3 else ''}); fix the producer, then replay if needed."
        )
    return report


def _checkpoints_in_the_log(settings: Settings, store: ObjectStore, partitions: list[int]) -> dict[int, Checkpoint]:
    """Each partition's checkpoint, checked against its Kafka log (LogMismatch if any does not fit).

    A partition never ingested starts at the log's first offset; every checkpoint records the topic's id.
    """
    cfg, topic = settings.ingest, settings.kafka.topic
    loaded = {p: Checkpoint.load(store, settings.s3.lake_bucket, topic, p) for p in partitions}
    logs = log_range.read(settings.kafka, topic, {p: c.next_offset if c else 0 for p, c in loaded.items()},
                          poll_timeout_ms=cfg.poll_timeout_ms, polls=cfg.empty_polls_to_stop)
    problems = []
    for ckpt, log in ((c, logs[p]) for p, c in loaded.items() if c is not None):
        try:
            log_range.check(ckpt, log)
        except LogMismatch as exc:
            problems.append(str(exc))
    if problems:
        raise LogMismatch("\n".join(problems))
    first = {p: Checkpoint(topic, p, next_offset=log.start, chunk_start=log.start - log.start % cfg.chunk_records)
             for p, log in logs.items()}
    return {p: replace(loaded[p] or first[p], topic_id=logs[p].topic_id or (loaded[p] or first[p]).topic_id)
            for p in partitions}


def _consume(kafka, sinks: dict[int, PartitionSink], cfg: IngestSettings, report: RunReport) -> str:
    deadline = time.monotonic() + cfg.max_run_seconds
    empty = 0
    while True:
        if report.records >= cfg.max_records_per_run:
            return "max_records"
        if time.monotonic() >= deadline:
            return "max_run_seconds"
        polled = kafka.poll(timeout_ms=cfg.poll_timeout_ms,
                            max_records=min(20_000, cfg.max_records_per_run - report.records))
        if not polled:
            empty += 1
            if empty >= cfg.empty_polls_to_stop:
                return "empty_poll"
            continue
        empty = 0
        for tp, records in polled.items():
            sinks[tp.partition].add([r.offset for r in records], [r.timestamp for r in records],
                                    [r.value if r.value is not None else b"" for r in records])
            report.records += len(records)


def _finish(report: RunReport, sinks: dict[int, PartitionSink]) -> None:
    report.finished_at = format_ts(datetime.now(timezone.utc))
    written = sorted({key for s in sinks.values() for key in s.written})
    report.objects = [k for k in written if k.startswith(lake.EVENTS_PREFIX)]
    report.deadletter_objects = [k for k in written if k.startswith(lake.DEADLETTER_PREFIX)]
    report.hours = sorted({k.rsplit("/", 1)[0] + "/" for k in report.objects})
    report.partitions = {p: s.stats for p, s in sinks.items()}
    report.bytes = sum(s.stats.bytes for s in sinks.values())
    report.deadletters = sum(s.stats.deadletters for s in sinks.values())

