"""The registry on the real embedded S3: immutable versions, compare-and-swap pointer, history, rollback."""

from __future__ import annotations

import threading
import uuid

import orjson
import pytest

from feedloop.registry import PointerRaceLost, Registry, RegistryError, VersionConflict, entries, sha256
from feedloop.storage import PreconditionFailed

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(store) -> Registry:
    """A registry in a fresh bucket per test."""
    bucket = f"reg-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    return Registry(store, bucket)


def _register(registry: Registry, version: str, *, model: bytes | None = None, parity: bool = True) -> dict:
    model = model or f"tree for {version}".encode()
    return registry.register(
        version=version,
        files={"model.txt": model, "model.onnx": b"onnx:" + model, "features/items.parquet": b"snapshot"},
        manifest={"feature_manifest": {"features": []}, "lineage": {"day": version[:10]}, "params": {},
                  "parity": {"passed": parity, "max_abs_diff": 1e-7 if parity else 1.0},
                  "gate": {"promotable": parity}})


def _live_doc(registry: Registry) -> dict:
    return orjson.loads(registry.store.get(registry.bucket, registry.live_key).body)


def test_a_version_is_written_once_and_cannot_be_overwritten(registry):
    manifest = _register(registry, "2026-11-05-aaaa")
    assert manifest["artifacts"]["model.onnx"]["sha256"] == sha256(b"onnx:tree for 2026-11-05-aaaa")
    assert _register(registry, "2026-11-05-aaaa") == manifest  # the same model again: a no-op
    with pytest.raises(VersionConflict, match="already registered with a different model_sha256"):
        _register(registry, "2026-11-05-aaaa", model=b"another tree")
    with pytest.raises(PreconditionFailed):
        registry.store.put(registry.bucket, registry.version_key("2026-11-05-aaaa", "model.txt"), b"x",
                           if_none_match=True)
    assert registry.read("2026-11-05-aaaa", "model.txt") == b"tree for 2026-11-05-aaaa"
    assert registry.versions() == ["2026-11-05-aaaa"]


def test_files_left_by_an_interrupted_registration_must_match_the_model(registry):
    registry.store.put(registry.bucket, registry.version_key("2026-11-05-bbbb", "model.txt"), b"half-written other")
    with pytest.raises(VersionConflict, match="exists with different bytes"):
        _register(registry, "2026-11-05-bbbb")
    assert registry.manifest("2026-11-05-bbbb") is None and registry.versions() == []


def test_the_first_flip_creates_the_pointer_with_the_onnx_hash(registry):
    _register(registry, "v1")
    pointer = registry.flip(version="v1", by="test", reason="first", expect_live=None)
    assert _live_doc(registry) == pointer
    assert pointer["sha256"] == sha256(b"onnx:tree for v1") and pointer["previous"] is None and pointer["seq"] == 1
    assert pointer["uri"] == f"s3://{registry.bucket}/ranker/versions/v1/"


def test_two_concurrent_promotions_exactly_one_wins_and_the_pointer_is_not_torn(registry):
    for v in ("v1", "v2", "v3"):
        _register(registry, v)
    registry.flip(version="v1", by="test", reason="first")
    plans = [registry.plan_flip(version=v, by=f"run-{v}", reason="race") for v in ("v2", "v3")]
    barrier, outcomes = threading.Barrier(2), {}

    def promote(plan):
        barrier.wait()
        try:
            outcomes[plan.pointer["version"]] = registry.commit(plan)
        except PointerRaceLost as exc:
            outcomes[plan.pointer["version"]] = exc

    threads = [threading.Thread(target=promote, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if isinstance(o, dict)]
    losers = [o for o in outcomes.values() if isinstance(o, PointerRaceLost)]
    assert len(winners) == 1 and len(losers) == 1
    assert "another promotion or rollback won" in str(losers[0]) and "nothing was changed" in str(losers[0])
    assert _live_doc(registry) == outcomes[winners[0]]
    assert [(e["seq"], e["version"], e["previous"]) for e in registry.history()] == [(1, "v1", None),
                                                                                    (2, winners[0], "v1")]


def test_two_first_promotions_race_on_if_none_match(registry):
    for v in ("v1", "v2"):
        _register(registry, v)
    a, b = (registry.plan_flip(version=v, by="t", reason="r") for v in ("v1", "v2"))
    registry.commit(a)
    with pytest.raises(PointerRaceLost):
        registry.commit(b)
    assert _live_doc(registry)["version"] == "v1"


def test_many_racing_flips_leave_a_contiguous_history(registry):
    versions = [f"v{i}" for i in range(4)]
    for v in versions:
        _register(registry, v)
    registry.flip(version="v0", by="t", reason="start")
    won = []

    def worker(offset):
        for i in range(6):
            try:
                won.append(registry.flip(version=versions[(i + offset) % 4], by=f"w{offset}", reason="stress"))
            except PointerRaceLost:
                pass

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = registry.history()
    assert [e["seq"] for e in history] == list(range(1, len(won) + 2))
    assert all(e["previous"] == before["version"] for before, e in zip(history, history[1:]))
    assert _live_doc(registry) == history[-1]


def test_a_stale_champion_is_refused(registry):
    for v in ("v1", "v2", "v3"):
        _register(registry, v)
    registry.flip(version="v1", by="t", reason="r")
    registry.flip(version="v2", by="t", reason="r")
    with pytest.raises(PointerRaceLost, match="live model is v2, not v1 as when v3 was gated"):
        registry.flip(version="v3", by="t", reason="r", expect_live="v1")


def test_a_version_that_failed_parity_can_never_be_live(registry):
    _register(registry, "bad", parity=False)
    with pytest.raises(RegistryError, match="failed ONNX parity"):
        registry.flip(version="bad", by="t", reason="r")
    with pytest.raises(RegistryError, match="not registered"):
        registry.flip(version="nope", by="t", reason="r")
    assert registry.live() is None


def test_rollback_restores_the_previous_version_and_records_it(registry):
    for v in ("v1", "v2"):
        _register(registry, v)
    registry.flip(version="v1", by="dag run a", reason="gate passed")
    registry.flip(version="v2", by="dag run b", reason="gate passed")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.plan_rollback(to=None, by="alice", reason=" ")
    plan = registry.plan_rollback(to=None, by="alice", reason="CTR dropped")
    assert plan.diff()["version"] == {"from": "v2", "to": "v1"} and registry.live().version == "v2"  # dry run
    registry.commit(plan)
    live = _live_doc(registry)
    assert (live["version"], live["previous"], live["action"], live["promoted_by"], live["reason"]) == (
        "v1", "v2", "rollback", "alice", "CTR dropped")
    assert live["sha256"] == sha256(b"onnx:tree for v1")
    assert [(e["to"], e["action"]) for e in entries(registry.history())] == [
        ("v1", "promote"), ("v2", "promote"), ("v1", "rollback")]
    with pytest.raises(RegistryError, match="v1 is already live"):
        registry.plan_rollback(to="v1", by="alice", reason="again")


def test_a_history_entry_lost_in_a_crash_is_recovered_from_the_pointer(registry):
    _register(registry, "v1")
    registry.flip(version="v1", by="t", reason="r")
    registry.store.delete(registry.bucket, "ranker/history/0000000001.json")
    assert [e["version"] for e in registry.history()] == ["v1"]
