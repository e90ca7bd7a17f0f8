"""A JSON pointer on S3 replaced only by compare-and-swap, with an append-only history of every write.

<prefix>live.json               the pointer; every write carries `seq`, one more than the one it replaces
<prefix>history/<seq>.json      one immutable copy of every pointer ever written (If-None-Match: *)

Why one owner: the model registry (ranker/live.json) and the feature snapshots (features/live.json)
follow the same rules, so they share this code: the pointer is replaced only by a PUT with If-Match
on the ETag read before (If-None-Match: * for the first one), so two writers cannot both win and a
pointer is never torn; and the history needs no read-modify-write of a shared list, because each
pointer's seq names its own history object. What a pointer holds is its owner's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from feedloop.core.storage import ObjectStore, PreconditionFailed


@dataclass(frozen=True)
class Read:
    """A pointer as read, with the ETag a replacement must match."""

    pointer: dict[str, Any]
    etag: str


class CasPointer:
    def __init__(self, store: ObjectStore, bucket: str, prefix: str):
        self.store, self.bucket, self.prefix = store, bucket, prefix

    @property
    def key(self) -> str:
        return f"{self.prefix}live.json"

    def read(self) -> Read | None:
        found = self.store.get(self.bucket, self.key)
        return None if found is None else Read(orjson.loads(found.body), found.etag)

    def replace(self, current: Read | None, pointer: dict[str, Any]) -> None:
        """Write `pointer` iff live.json is still `current` (None: there is none); then its history entry.

        Raises PreconditionFailed when another writer won: nothing was changed. A 412 is not always
        another writer: when the answer to our PUT is lost, botocore retries it and the retry meets
        our own write, so a 412 is believed only once a re-read shows that our pointer never landed.
        """
        try:
            if current is None:
                self.store.put_json(self.bucket, self.key, pointer, if_none_match=True)
            else:
                self.record(current.pointer)  # repairs an entry a crash may have skipped
                self.store.put_json(self.bucket, self.key, pointer, if_match=current.etag)
        except PreconditionFailed:
            if not self._landed(pointer):
                raise
        self.record(pointer)

    def _landed(self, pointer: dict[str, Any]) -> bool:
        """Did this exact pointer become live.json? It is there now, or the next writer recorded it as the pointer
        it replaced (each pointer is unique: its seq, writer and millisecond timestamp)."""
        now = self.read()
        return (now is not None and now.pointer == pointer) or self.entry(pointer["seq"]) == pointer

    def record(self, pointer: dict[str, Any]) -> None:
        try:
            self.store.put_json(self.bucket, self.history_key(pointer["seq"]), pointer, if_none_match=True)
        except PreconditionFailed:
            pass  # already recorded: entries are immutable

    def history_key(self, seq: int) -> str:
        return f"{self.prefix}history/{seq:010d}.json"

    def history(self) -> list[dict[str, Any]]:
        """Every pointer ever written, oldest first (the live one included even if its entry was lost)."""
        current = self.read()
        if current is not None:
            self.record(current.pointer)
        keys = sorted(self.store.list_keys(self.bucket, f"{self.prefix}history/"))
        return [self.store.get_json(self.bucket, k) for k in keys]

    def entry(self, seq: int) -> dict[str, Any] | None:
        """History entry `seq` (read by name: no listing)."""
        return self.store.get_json(self.bucket, self.history_key(seq))


def next_seq(current: Read | None) -> int:
    return (current.pointer.get("seq", 0) + 1) if current else 1
