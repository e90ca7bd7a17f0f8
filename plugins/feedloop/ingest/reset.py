"""`feedloop ingest reset-checkpoint`: the operator's way on when a checkpoint no longer fits its Kafka log.

Why an explicit, recorded action: moving a checkpoint decides which records are landed and which
are given up, so the sink never does it by itself (feedloop.ingest.log_range fails the run
instead). The reset is a compare-and-swap on the checkpoint (it fences any sink run), bumps the
log generation so the new log's objects never share a name with (and so never overwrite) what
the old log landed, and leaves an immutable audit record on S3: who, when, why, before and after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.contract.events import format_ts
from feedloop.ingest import log_range
from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.errors import IngestError
from feedloop.core.storage import ObjectStore


@dataclass(frozen=True)
class ResetRecord:
    topic: str
    partition: int
    at: str
    by: str
    reason: str
    before: dict          # the checkpoint as it was
    after: dict           # the checkpoint as reset
    log: dict             # the log range seen at the reset
    skipped: int          # offsets of the current log below the new position: never landed, by this decision
    audit_key: str


def reset_checkpoint(settings: Settings, *, partition: int, to: str, reason: str, by: str,
                     store: ObjectStore | None = None) -> ResetRecord:
    """Point `partition`'s checkpoint at `to` ('earliest' or an offset inside the log) in a new generation."""
    if len(reason.strip()) < 3:
        raise IngestError("reset-checkpoint needs --reason: say why (it is recorded in the audit trail)")
    store = store or ObjectStore.from_settings(settings)
    bucket, topic = settings.s3.lake_bucket, settings.kafka.topic
    before = Checkpoint.load(store, bucket, topic, partition)
    if before is None:
        raise IngestError(f"{topic}[{partition}] has no checkpoint: nothing to reset (the next sink run starts at "
                          f"the log's first offset)")
    wanted = _offset(to)
    log = log_range.read(settings.kafka, topic, {partition: wanted or 0},
                         poll_timeout_ms=settings.ingest.poll_timeout_ms,
                         polls=settings.ingest.empty_polls_to_stop, exact_end=True)[partition]
    target = log.start if wanted is None else wanted
    if not (log.start <= target and log.reaches):
        raise IngestError(f"--to {target:,} is outside {topic}[{partition}]: {log.describe()}; give an offset from "
                          f"{log.start:,} to {log.end:,}, or 'earliest'")
    size = before.chunk_records or settings.ingest.chunk_records
    now = datetime.now(timezone.utc)
    after = replace(before, next_offset=target, chunk_records=size, chunk_start=target - target % size,
                    chunk_objects=[], topic_id=log.topic_id, generation=before.generation + 1,
                    owner=f"reset-checkpoint:{by}", updated_at=format_ts(now))
    after.save(store, bucket)  # CAS on the ETag read: a sink run that moved it meanwhile makes this fail
    record = ResetRecord(topic, partition, format_ts(now), by, reason.strip(), _doc(before), _doc(after),
                         asdict(log), target - log.start, lake.ingest_audit_key(now, topic, partition))
    store.put_json(bucket, record.audit_key, asdict(record), if_none_match=True)
    return record


def audit_trail(settings: Settings, *, store: ObjectStore | None = None) -> list[dict]:
    """Every recorded reset, oldest first."""
    store = store or ObjectStore.from_settings(settings)
    bucket = settings.s3.lake_bucket
    return [store.get_json(bucket, key) for key in sorted(store.list_keys(bucket, lake.ingest_audit_prefix()))]


def _offset(to: str) -> int | None:
    """None for 'earliest', else the offset given."""
    if to == "earliest":
        return None
    try:
        return int(to)
    except ValueError:
        raise IngestError(f"--to {to!r}: give 'earliest' or an offset (an integer)") from None


def _doc(ckpt: Checkpoint) -> dict:
    return {k: v for k, v in asdict(ckpt).items() if k != "etag"}
