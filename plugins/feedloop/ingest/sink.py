"""The bounded sink run: Kafka -> Parquet objects on S3, exactly once.

Commit protocol, per partition (feedloop.ingest.partition): claim the checkpoint (compare-and-swap,
fencing any older run), write each chunk's objects (deterministic names, conditional puts:
feedloop.ingest.fence), then the checkpoint (compare-and-swap); after every chunk is written, commit
the Kafka offsets. A crash anywhere leaves at worst objects that a retry rewrites with the same names,
so a row is never stored twice; the checkpoint (read first on start) means a lost Kafka commit never
re-adds data either. The poll thread only fetches: decoding and writing run in a bounded pipeline
behind it (feedloop.ingest.pipeline), which keeps that order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Iterable

from feedloop.contract.events import format_ts
from feedloop.core import layout as lake
from feedloop.core.config import IngestSettings, Settings
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import consumer
from feedloop.ingest import failpoints, log_range
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.errors import BrokerSilent, IngestError, LogMismatch
from feedloop.ingest.partition import PartitionSink, PartitionStats
from feedloop.ingest.pipeline import Pipeline

log = logging.getLogger(__name__)


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
    unread: dict[int, int] = field(default_factory=dict)  # stop_reason broker_silent: records the broker kept back

    @property
    def bad_ratio(self) -> float:
        return self.deadletters / self.records if self.records else 0.0


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
        pipeline = Pipeline(sinks, depth=cfg.pipeline_depth)
        try:
            report.stop_reason = _consume(kafka, pipeline, cfg, report)
        except BaseException:
            pipeline.abort()
            raise
        pipeline.close()  # every chunk written and checkpointed, or the first error raised here
        failpoints.hit(failpoints.AFTER_CHECKPOINT)
        kafka.commit({tps[p]: OffsetAndMetadata(s.checkpoint.next_offset, "", -1) for p, s in sinks.items()})
        failpoints.hit(failpoints.AFTER_COMMIT)
    finally:
        kafka.close(autocommit=False)
    _finish(report, sinks)
    store.put_json(settings.s3.lake_bucket, lake.run_manifest_key(report.run_id), asdict(report))
    if report.stop_reason == "broker_silent":
        raise BrokerSilent(
            f"the broker {settings.kafka.bootstrap_servers} reports {sum(report.unread.values()):,} records of "
            f"{topic} past this run's position (partition: records {report.unread}) but answered every fetch for "
            f"ingest.max_silent_seconds={cfg.max_silent_seconds:g} with nothing. This run landed {report.records:,} "
            "records and saved its checkpoint, so nothing is lost and the next run goes on from there; but a "
            "healthy broker hands records out within seconds, so the day's data is incomplete until it does. Check "
            "the broker's health and load (the embedded Tansu: `feedloop stack status`, its log in the bucket "
            "<lake>-kafka), then run ingest_engagement again.")
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


def _consume(kafka, pipeline: Pipeline, cfg: IngestSettings, report: RunReport) -> str:
    """Poll and hand each batch to the pipeline (blocking while it is full) until a stop condition.

    Empty polls end the run only once the consumer has reached the log's end offsets: a busy broker can answer
    fetches with nothing while it holds records (a closed-loop day stopped after 2,143 of its ~74,000 records, and
    the retrain that followed saw a seventh of the day; 2026-12-06). But a broker that reports records and hands
    none out for ingest.max_silent_seconds is not busy, it is broken: the run ends there ("broker_silent", which
    `run` raises once everything landed is saved) instead of passing with part of a day (bench/loop.py at eight
    times the traffic, 2026-12-06: ten minutes of empty polls, then a day trained on half its events)."""
    deadline = time.monotonic() + cfg.max_run_seconds
    empty, flushed, silent_since = 0, False, None
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
                behind = log_range.unread(kafka)
                if not behind:
                    return "empty_poll"
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since >= cfg.max_silent_seconds:
                    report.unread = behind
                    return "broker_silent"
                log.warning("%d empty polls, but the log holds records past this run's position (partition: "
                            "records) %s: polling on until they come, ingest.max_silent_seconds or "
                            "ingest.max_run_seconds", empty, behind)
                empty = 0
            if not flushed:
                # the log is idle: land the open chunks while the next polls wait. Once a run: on a trickle, where
                # empty polls alternate with records, every flush would rewrite the growing open chunk again.
                pipeline.flush()
                flushed = True
            continue
        empty, silent_since = 0, None
        for tp, records in polled.items():
            pipeline.submit(tp.partition, [r.offset for r in records], [r.timestamp for r in records],
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

