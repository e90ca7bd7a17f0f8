"""Per-partition checkpoint in S3, written after the data it describes, only by compare-and-swap.

It is the sink's source of truth for where to resume: Kafka's committed offset can be lost
or lag behind (it is committed last), the checkpoint cannot claim data that is not in S3.
Every write is conditional on the ETag read (If-Match; If-None-Match: * for the first one),
so of two writers that read the same checkpoint only one can move it; the other is fenced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import orjson

from feedloop.core import layout as lake
from feedloop.contract.events import format_ts
from feedloop.ingest.errors import Fenced
from feedloop.core.storage import ObjectStore, PreconditionFailed


@dataclass
class Checkpoint:
    topic: str
    partition: int
    next_offset: int = 0                 # everything below is durably in S3
    chunk_records: int = 0               # object boundaries: multiples of this many offsets (never changes)
    chunk_start: int = 0                 # the open (still filling) chunk
    chunk_objects: list[str] = field(default_factory=list)   # its events + dead-letter objects
    updated_at: str = ""
    owner: str = ""                      # the run that claimed it last (sink run id, replay or reset)
    topic_id: str = ""                   # Kafka's id of the topic these offsets belong to ("" = not known)
    generation: int = 0                  # bumped by reset-checkpoint; object names carry it (lake.object_name)
    etag: str | None = field(default=None, compare=False, repr=False)  # as read or last written; not stored

    @classmethod
    def load(cls, store: ObjectStore, bucket: str, topic: str, partition: int) -> Checkpoint | None:
        found = store.get(bucket, lake.checkpoint_key(topic, partition))
        return None if found is None else cls(**orjson.loads(found.body), etag=found.etag)

    def save(self, store: ObjectStore, bucket: str) -> None:
        """Replace the stored checkpoint iff it is still the one this copy was read as (or none yet).

        Raises Fenced, naming who holds it now, when another writer moved it first.
        """
        doc = {k: v for k, v in asdict(self).items() if k != "etag"}
        condition = {"if_match": self.etag} if self.etag else {"if_none_match": True}
        try:
            self.etag = store.put_json(bucket, lake.checkpoint_key(self.topic, self.partition), doc, **condition)
        except PreconditionFailed:
            raise fenced(store, bucket, self) from None

    def claimed(self, store: ObjectStore, bucket: str, owner: str) -> Checkpoint:
        """This checkpoint, claimed by `owner`: every writer that read it before can no longer commit."""
        claim = replace(self, owner=owner, updated_at=format_ts(datetime.now(timezone.utc)))
        claim.save(store, bucket)
        return claim


def fenced(store: ObjectStore, bucket: str, mine: Checkpoint) -> Fenced:
    """The error for a writer whose claim on `mine`'s partition was taken over."""
    now = Checkpoint.load(store, bucket, mine.topic, mine.partition)
    holder = f"{now.owner or 'another writer'} (next_offset {now.next_offset:,}, {now.updated_at})" if now else "nobody"
    return Fenced(
        f"{mine.topic}[{mine.partition}]: the checkpoint s3://{bucket}/{lake.checkpoint_key(mine.topic, mine.partition)} "
        f"was claimed by {holder} after {mine.owner or 'this run'} read it; this run stopped and committed nothing "
        f"more (no row is lost: the holder, or the next sink run, lands it). Run one sink at a time (the "
        f"ingest_engagement DAG or `feedloop ingest run`), and rerun this one if the holder failed."
    )
