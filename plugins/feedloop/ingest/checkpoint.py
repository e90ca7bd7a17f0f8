"""Per-partition checkpoint in S3, written after the data it describes.

It is the sink's source of truth for where to resume: Kafka's committed offset can be lost
or lag behind (it is committed last), the checkpoint cannot claim data that is not in S3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from feedloop import lake
from feedloop.storage import ObjectStore


@dataclass
class Checkpoint:
    topic: str
    partition: int
    next_offset: int = 0                 # everything below is durably in S3
    chunk_records: int = 0               # object boundaries: multiples of this many offsets (never changes)
    chunk_start: int = 0                 # the open (still filling) chunk
    chunk_objects: list[str] = field(default_factory=list)   # its events + dead-letter objects
    updated_at: str = ""

    @classmethod
    def load(cls, store: ObjectStore, bucket: str, topic: str, partition: int) -> Checkpoint | None:
        doc = store.get_json(bucket, lake.checkpoint_key(topic, partition))
        return None if doc is None else cls(**doc)

    def save(self, store: ObjectStore, bucket: str) -> None:
        store.put_json(bucket, lake.checkpoint_key(self.topic, self.partition), asdict(self))
