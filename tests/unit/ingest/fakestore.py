"""An in-memory S3 with S3's conditional-put rules, and a wrapper that runs another writer in between two calls.

Why a fake here: the interleaving tests must stop one writer between two exact store calls and
let another writer run there, for every such point; the real embedded S3 proves the conditions
themselves (tests/integration/test_ingest_fencing.py).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import orjson

from feedloop.core.storage import PreconditionFailed, StoredObject


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], StoredObject] = {}

    def put(self, bucket: str, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None,
            content_type: str = "application/octet-stream") -> str:
        current = self.objects.get((bucket, key))
        if (if_none_match and current is not None) or (
                if_match is not None and (current is None or current.etag != if_match)):
            raise PreconditionFailed(f"s3://{bucket}/{key}: conditional put lost")
        etag = f'"{hashlib.md5(body).hexdigest()}"'
        self.objects[(bucket, key)] = StoredObject(body, etag)
        return etag

    def get(self, bucket: str, key: str) -> StoredObject | None:
        return self.objects.get((bucket, key))

    def put_json(self, bucket: str, key: str, obj: object, **conditions) -> str:
        return self.put(bucket, key, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), **conditions)

    def get_json(self, bucket: str, key: str) -> object | None:
        found = self.get(bucket, key)
        return None if found is None else orjson.loads(found.body)

    def list_keys(self, bucket: str, prefix: str = "") -> Iterator[str]:
        yield from sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)


class Interleaved:
    """`store` for one writer; before its call number `at` (0-based), `other()` runs to completion."""

    def __init__(self, store: FakeStore, at: int, other: Callable[[], None]):
        self.store, self.at, self.other, self.calls, self.ran = store, at, other, 0, False

    def __getattr__(self, name: str):
        method = getattr(self.store, name)

        def call(*args, **kwargs):
            if self.calls == self.at:
                self.finish()
            self.calls += 1
            return method(*args, **kwargs)

        return call

    def finish(self) -> None:
        """Run `other` now if it has not run yet (the writer made fewer than `at` calls)."""
        if not self.ran:
            self.ran = True
            self.other()
