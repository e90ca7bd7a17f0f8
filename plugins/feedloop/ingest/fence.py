"""Object writes fenced by a claim on the partition's checkpoint.

S3 has no transaction over two objects, so the checkpoint alone cannot stop a writer that read
it before another writer claimed it from still overwriting a chunk object with fewer rows.
Every object write is therefore conditional too:
- on the ETag this writer wrote last for that key, or read while its claim held (If-Match), or
  If-None-Match: * for a key it has not seen: an object changed by anyone else since makes it lose;
- where it must overwrite an object it has not seen (left by a run that never committed, or any
  write of a replay), it reads the object, checks that its claim on the checkpoint still holds,
  then writes with If-Match on what it read. A writer that claimed later did so before any
  write of its own, so either the check sees that claim or the If-Match sees that write.
A writer that loses raises Fenced and never writes the checkpoint (which is itself CAS).
"""

from __future__ import annotations

from feedloop.core import layout as lake
from feedloop.ingest.checkpoint import Checkpoint, fenced
from feedloop.core.storage import ObjectStore, PreconditionFailed


class Claim:
    """One writer's hold on a partition: its checkpoint (as claimed) and the ETags of the objects it knows."""

    def __init__(self, store: ObjectStore, bucket: str, checkpoint: Checkpoint, owner: str):
        self.store, self.bucket = store, bucket
        self.checkpoint = checkpoint.claimed(store, bucket, owner)
        self.etags: dict[str, str] = {}

    def read(self, key: str) -> bytes | None:
        """An object's bytes, remembering its ETag for the next write of it.

        The claim is checked after the read: if it still holds, whoever claims later writes after
        this read, so a later If-Match on this ETag loses to that writer.
        """
        found = self.store.get(self.bucket, key)
        self._check_claim()
        if found is not None:
            self.etags[key] = found.etag
        return None if found is None else found.body

    def put(self, key: str, body: bytes) -> None:
        """Write an object this writer has read or written before, or a new one (the sink's writes)."""
        known = self.etags.get(key)
        try:
            self.etags[key] = self.store.put(self.bucket, key, body, **(
                {"if_match": known} if known else {"if_none_match": True}))
        except PreconditionFailed:
            if known:
                raise self._fenced() from None
            self.rewrite(key, body)  # an object a run that never committed left behind

    def rewrite(self, key: str, body: bytes) -> str:
        """Overwrite whatever is there while the claim holds: created | unchanged | changed (replay's writes)."""
        before = self.store.get(self.bucket, key)
        if before is not None and before.body == body:
            self.etags[key] = before.etag
            return "unchanged"
        self._check_claim()
        try:
            self.etags[key] = self.store.put(self.bucket, key, body, **(
                {"if_match": before.etag} if before else {"if_none_match": True}))
        except PreconditionFailed:
            raise self._fenced() from None
        return "changed" if before else "created"

    def commit(self, checkpoint: Checkpoint) -> None:
        """Move the checkpoint (CAS on the claim's ETag): the position last, after the data it names."""
        checkpoint.etag = self.checkpoint.etag
        checkpoint.save(self.store, self.bucket)
        self.checkpoint = checkpoint

    def _check_claim(self) -> None:
        current = self.store.get(self.bucket, lake.checkpoint_key(self.checkpoint.topic, self.checkpoint.partition))
        if current is None or current.etag != self.checkpoint.etag:
            raise self._fenced()

    def _fenced(self):
        return fenced(self.store, self.bucket, self.checkpoint)
