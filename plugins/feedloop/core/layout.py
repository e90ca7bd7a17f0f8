"""Where things live in the lake bucket: one place for every key layout.

events/engagement/dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<chunk start offset:020d>[.g<generation>].parquet
deadletter/engagement/dt=YYYY-MM-DD/<topic>+<partition>+<chunk start offset:020d>[.g<generation>].parquet
_ingest/engagement/checkpoints/<topic>+<partition>.json     (written after the data)
_ingest/engagement/runs/<run id>.json                       (one manifest per sink run)
_ingest/engagement/audit/<time>+<topic>+<partition>.json    (one record per operator action: reset-checkpoint)
validation/dt=YYYY-MM-DD/...                                 (validation results and Data Docs)
catalog/items/items.parquet                                  (item catalog: author, topic, created_at, title, ...)
catalog/items/embeddings.parquet                             (item text embeddings: feedloop.content.item_embeddings)
datasets/ranker/YYYY-MM-DD/split=train|valid|holdout/*.parquet, snapshot/*.parquet, lineage.json

And in the models bucket, the ranker's registry (feedloop.promotion.registry):
ranker/versions/<version>/                                   (one immutable folder per registered version)
ranker/live.json                                             (the live pointer, core.pointer.CasPointer under ranker/)
retriever/versions/<version>/, retriever/live.json           (the two-tower retriever: a kind of its own, ModelKind)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime


EVENTS_PREFIX = "events/engagement/"
DEADLETTER_PREFIX = "deadletter/engagement/"
INGEST_PREFIX = "_ingest/engagement/"
VALIDATION_PREFIX = "validation/"
CATALOG_ITEMS_KEY = "catalog/items/items.parquet"   # item_id, author_id, tenant_id, topic, created_at, title,
                                                   # description
CATALOG_EMBEDDINGS_KEY = "catalog/items/embeddings.parquet"  # item_id, tenant_id, model, text_sha256, embedding,
                                                             # embedded_at (feedloop.content.item_embeddings)
DATASETS_PREFIX = "datasets/ranker/"


def dataset_prefix(day: date) -> str:
    """Training set built for the run whose data interval ends with `day` (inclusive)."""
    return f"{DATASETS_PREFIX}{day.isoformat()}/"


@dataclass(frozen=True)
class ModelKind:
    """A family of models in the models bucket: <name>/versions/<version>/, <name>/live.json, <name>/history/.
    Each kind has its own versions, live pointer and history, flipped by the same conditional PUT."""

    name: str
    identity_file: str  # the bytes that identify a version: the same id with other bytes is a conflict
    served_file: str    # what the pods load; the live pointer carries its sha256

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    @property
    def versions_prefix(self) -> str:
        return f"{self.prefix}versions/"

    def version_key(self, version: str, name: str = "") -> str:
        """A registered version's folder ("") or one of its files, in the models bucket."""
        return f"{self.versions_prefix}{version}/{name}"

    def version_uri(self, models_bucket: str, version: str) -> str:
        """The S3 URI of a registered version's folder."""
        return f"s3://{models_bucket}/{self.version_key(version)}"


RANKER = ModelKind("ranker", identity_file="model.txt", served_file="model.onnx")
RETRIEVER = ModelKind("retriever", identity_file="query.onnx", served_file="query.onnx")  # feedloop.retrieval
RANKER_PREFIX = RANKER.prefix  # models bucket
RANKER_VERSIONS_PREFIX = RANKER.versions_prefix
RANKER_LIVE_KEY = f"{RANKER_PREFIX}live.json"


def version_key(version: str, name: str = "") -> str:
    """A registered ranker version's folder ("") or one of its files, in the models bucket."""
    return RANKER.version_key(version, name)


def version_uri(models_bucket: str, version: str) -> str:
    """The S3 URI of a registered ranker version's folder."""
    return RANKER.version_uri(models_bucket, version)


_OBJECT_RE = re.compile(r"(?P<topic>[^/+]+)\+(?P<partition>\d+)\+(?P<start>\d{20})(?:\.g(?P<gen>\d+))?\.parquet$")
_HOUR_RE = re.compile(r"dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/")


@dataclass(frozen=True, order=True)
class HourPartition:
    day: date
    hour: int

    @property
    def prefix(self) -> str:
        return f"{EVENTS_PREFIX}dt={self.day.isoformat()}/hour={self.hour:02d}/"

    @classmethod
    def of(cls, ts: datetime) -> HourPartition:
        return cls(ts.date(), ts.hour)


def day_prefix(day: date) -> str:
    return f"{EVENTS_PREFIX}dt={day.isoformat()}/"


def object_name(topic: str, partition: int, chunk_start: int, generation: int = 0) -> str:
    """Deterministic object name: a replay of the same offsets rewrites the same object.

    The generation (bumped when an operator resets a checkpoint onto a new Kafka log) keeps the new
    log's offsets from ever naming, and so overwriting, an object landed from the old one.
    """
    suffix = f".g{generation}" if generation else ""
    return f"{topic}+{partition}+{chunk_start:020d}{suffix}.parquet"


def events_key(hour: HourPartition, topic: str, partition: int, chunk_start: int, generation: int = 0) -> str:
    return hour.prefix + object_name(topic, partition, chunk_start, generation)


def deadletter_key(day: date, topic: str, partition: int, chunk_start: int, generation: int = 0) -> str:
    return f"{DEADLETTER_PREFIX}dt={day.isoformat()}/" + object_name(topic, partition, chunk_start, generation)


def checkpoint_key(topic: str, partition: int) -> str:
    return f"{INGEST_PREFIX}checkpoints/{topic}+{partition}.json"


def run_manifest_key(run_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_id)
    return f"{INGEST_PREFIX}runs/{safe}.json"


def ingest_audit_prefix() -> str:
    return f"{INGEST_PREFIX}audit/"


def ingest_audit_key(at: datetime, topic: str, partition: int) -> str:
    """One immutable record per operator action on a partition's checkpoint, sorted by time."""
    return f"{ingest_audit_prefix()}{at.strftime('%Y%m%dT%H%M%S%fZ')}+{topic}+{partition}.json"


@dataclass(frozen=True)
class ObjectRef:
    key: str
    topic: str
    partition: int
    chunk_start: int
    hour: HourPartition | None
    generation: int = 0


def parse_key(key: str) -> ObjectRef | None:
    """The topic, partition, chunk and hour an events or dead-letter key encodes (None if not ours)."""
    m = _OBJECT_RE.search(key)
    if not m:
        return None
    h = _HOUR_RE.search(key)
    try:
        hour = HourPartition(date.fromisoformat(h["dt"]), int(h["hour"])) if h else None
    except ValueError:  # dt=2026-13-45: an object someone else put under our prefix
        return None
    if hour is not None and not 0 <= hour.hour <= 23:
        return None
    return ObjectRef(key, m["topic"], int(m["partition"]), int(m["start"]), hour, int(m["gen"] or 0))
