"""CasPointer.replace when the answer to its conditional PUT is lost: botocore retries the PUT, and the retry gets
412 against the write the first attempt made. The interleavings, on an in-memory store that applies a PUT and then
answers the way that retry does; tests/integration/test_registry.py proves it through a real lossy network."""

from __future__ import annotations

import itertools

import orjson
import pytest

from feedloop.core.pointer import CasPointer
from feedloop.promotion.pointer_plan import PointerRaceLost
from feedloop.promotion.registry import Registry
from feedloop.core.storage import PreconditionFailed, StoredObject

BUCKET, LIVE = "models", "ranker/live.json"


class Store:
    """Conditional puts like S3; `lose` names keys whose next PUT is applied and then answered 412 (the retry's
    answer); `then` runs right after such a PUT landed (another writer acting in between)."""

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.etags = itertools.count(1)
        self.lose: set[str] = set()
        self.then = None

    def put(self, bucket, key, body, *, if_none_match=False, if_match=None, content_type=""):
        current = self.objects.get(key)
        if (if_none_match and current is not None) or (if_match is not None and (current is None or current.etag
                                                                                   != if_match)):
            raise PreconditionFailed(f"s3://{bucket}/{key}: conditional put lost")
        self.objects[key] = StoredObject(body, f'"{next(self.etags)}"')
        if key in self.lose:
            self.lose.discard(key)
            if self.then:
                self.then()
            raise PreconditionFailed(f"s3://{bucket}/{key}: conditional put lost")  # the retry's 412
        return self.objects[key].etag

    def put_json(self, bucket, key, obj, **conditions):
        return self.put(bucket, key, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), **conditions)

    def get(self, bucket, key):
        return self.objects.get(key)

    def get_json(self, bucket, key):
        found = self.get(bucket, key)
        return None if found is None else orjson.loads(found.body)

    def list_keys(self, bucket, prefix=""):
        return sorted(k for k in self.objects if k.startswith(prefix))

    def uri(self, bucket, key=""):
        return f"s3://{bucket}/{key}"


def pointer(seq: int, version: str, by: str = "dag") -> dict:
    return {"seq": seq, "version": version, "promoted_by": by, "promoted_at": f"2026-11-0{seq}T00:00:00.000Z",
            "action": "promote", "previous": None, "canary": None}


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.mark.parametrize("first", [pytest.param(True, id="first-pointer-if-none-match"),
                                   pytest.param(False, id="replacement-if-match")])
def test_a_write_whose_answer_was_lost_is_recognised_and_recorded(store, first):
    cas = CasPointer(store, BUCKET, "ranker/")
    if not first:
        cas.replace(None, pointer(1, "v1"))
    mine = pointer(1 if first else 2, "v2")
    store.lose.add(LIVE)
    cas.replace(cas.read(), mine)  # no PreconditionFailed: live.json holds what this call wrote
    assert cas.read().pointer == mine and cas.history()[-1] == mine


def test_another_writers_pointer_is_still_a_lost_race(store):
    cas = CasPointer(store, BUCKET, "ranker/")
    cas.replace(None, pointer(1, "v1"))
    read = cas.read()
    cas.replace(read, pointer(2, "v2", by="someone else"))
    with pytest.raises(PreconditionFailed):
        cas.replace(read, pointer(2, "v3"))
    assert cas.read().pointer["version"] == "v2" and [p["version"] for p in cas.history()] == ["v1", "v2"]


def test_a_write_that_landed_and_was_replaced_before_the_reread_still_counts(store):
    """Ours landed, its answer was lost, and another writer replaced it before the re-read: that writer recorded
    ours as the pointer it replaced, so the history says ours happened."""
    cas = CasPointer(store, BUCKET, "ranker/")
    cas.replace(None, pointer(1, "v1"))
    mine = pointer(2, "v2")

    def other_writer():
        store.then = None
        cas.replace(cas.read(), pointer(3, "v3", by="someone else"))

    store.lose.add(LIVE)
    store.then = other_writer
    cas.replace(cas.read(), mine)
    assert [p["version"] for p in cas.history()] == ["v1", "v2", "v3"]


def test_the_registry_reports_a_flip_whose_answer_was_lost_as_applied(store):
    registry = Registry(store, BUCKET)
    for version in ("2026-11-05-aa", "2026-11-06-bb"):
        store.put_json(BUCKET, registry.version_key(version, "manifest.json"),
                       {"parity": {"passed": True}, "artifacts": {"model.onnx": {"sha256": version}}})
    registry.flip(version="2026-11-05-aa", by="dag", reason="first")
    store.lose.add(LIVE)
    flipped = registry.flip(version="2026-11-06-bb", by="dag", reason="better")  # no PointerRaceLost
    assert registry.live().pointer == flipped and registry.history()[-1] == flipped
    plan = registry.plan_rollback(to=None, by="alice", reason="bad")
    store.put_json(BUCKET, LIVE, {**registry.live().pointer, "seq": 3, "promoted_by": "bob"})  # bob wins meanwhile
    with pytest.raises(PointerRaceLost, match="NOT applied"):
        registry.commit(plan)
    assert registry.live().pointer["promoted_by"] == "bob"
