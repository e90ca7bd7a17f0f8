"""The registry on the real embedded S3: immutable versions, compare-and-swap pointer, history, rollback."""

from __future__ import annotations

import threading
import uuid
from datetime import date, timedelta

import orjson
import pytest

from feedloop.promotion.pointer_plan import CanaryConflict, PointerRaceLost, RegistryError
from feedloop.promotion.registry import Registry, VersionConflict, entries, sha256
from feedloop.core.storage import PreconditionFailed

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
    assert "another promotion, rollback or canary change won" in str(losers[0])
    assert "was NOT applied and nothing was changed" in str(losers[0])
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
    with pytest.raises(RegistryError, match="reason: required: at least 3 characters"):
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


def test_the_champion_of_a_day_is_the_version_live_at_its_end_never_one_trained_on_it_or_later(registry):
    for v in ("2026-11-04-aaaa", "2026-11-05-bbbb", "2026-11-07-cccc"):
        _register(registry, v)
    assert registry.champion_of(date(2026, 11, 5)) is None  # nothing live yet
    registry.flip(version="2026-11-04-aaaa", by="retrain", reason="gate", logical_date="2026-11-04")
    registry.flip(version="2026-11-05-bbbb", by="retrain", reason="gate", logical_date="2026-11-05")
    registry.flip(version="2026-11-07-cccc", by="retrain", reason="gate", logical_date="2026-11-07")
    assert registry.live().pointer["logical_date"] == "2026-11-07"
    # Day 6 was served by day 5's model (live from the start of day 6); a backfill of day 5 meets day 4's.
    assert registry.champion_of(date(2026, 11, 6)) == "2026-11-05-bbbb"
    assert registry.champion_of(date(2026, 11, 7)) == "2026-11-05-bbbb"
    assert registry.champion_of(date(2026, 11, 5)) == "2026-11-04-aaaa"
    assert registry.champion_of(date(2026, 11, 4)) is None
    assert registry.champion_of(date(2026, 11, 8)) == "2026-11-07-cccc"
    # A rollback by hand takes effect when it is written (now), after every one of those days ended.
    registry.commit(registry.plan_rollback(to=None, by="alice", reason="CTR dropped"))
    assert registry.live().version == "2026-11-05-bbbb"
    assert registry.champion_of(date(2026, 11, 8)) == "2026-11-07-cccc"
    assert registry.champion_of(date.today() + timedelta(days=1)) == "2026-11-05-bbbb"


def test_a_history_entry_lost_in_a_crash_is_recovered_from_the_pointer(registry):
    _register(registry, "v1")
    registry.flip(version="v1", by="t", reason="r")
    registry.store.delete(registry.bucket, "ranker/history/0000000001.json")
    assert [e["version"] for e in registry.history()] == ["v1"]


# ---- canary ---------------------------------------------------------------------------------------

@pytest.fixture
def live_v1(registry) -> Registry:
    """v0 then v1 promoted (v1 live, previous v0); v2 and v3 registered; "bad" failed ONNX parity."""
    for v in ("v0", "v1", "v2", "v3"):
        _register(registry, v)
    _register(registry, "bad", parity=False)
    registry.flip(version="v0", by="dag", reason="first")
    registry.flip(version="v1", by="dag", reason="gate passed")
    return registry


def _canary(registry: Registry, version: str, percent: float, by: str = "alice", reason: str = "try it") -> dict:
    return registry.commit(registry.plan_canary(version=version, percent=percent, by=by, reason=reason))


def test_a_canary_starts_ramps_and_is_promoted_through_the_pointer(live_v1):
    registry = live_v1
    started = _canary(registry, "v2", 10, reason="new features")
    assert _live_doc(registry) == started
    canary = started["canary"]
    assert canary == {"version": "v2", "uri": f"s3://{registry.bucket}/ranker/versions/v2/",
                      "sha256": sha256(b"onnx:tree for v2"), "percent": 10.0, "started_at": canary["started_at"],
                      "started_by": "alice", "reason": "new features"}
    assert canary["started_at"].endswith("Z") and isinstance(canary["percent"], float)
    assert (started["seq"], started["version"], started["previous"], started["sha256"], started["action"]) == (
        3, "v1", "v0", sha256(b"onnx:tree for v1"), "canary")  # the live model is untouched

    ramped = _canary(registry, "v2", 50, by="bob", reason="no errors at 10%")
    assert ramped["canary"] == {**canary, "percent": 50.0}  # the canary's start is kept, only the share moves
    assert (ramped["seq"], ramped["promoted_by"], ramped["reason"]) == (4, "bob", "no errors at 10%")
    with pytest.raises(RegistryError, match="canary of v2 at 50% is already running: nothing to change"):
        registry.plan_canary(version="v2", percent=50.0, by="bob", reason="again")

    promoted = registry.commit(registry.plan_promote_canary(by="carol", reason="CTR +2%"))
    assert _live_doc(registry) == promoted
    assert (promoted["seq"], promoted["version"], promoted["previous"], promoted["canary"], promoted["action"]) == (
        5, "v2", "v1", None, "promote-canary")
    assert promoted["sha256"] == canary["sha256"] and promoted["uri"] == canary["uri"]
    rows = entries(registry.history())
    assert [(r["seq"], r["from"], r["to"], r["canary"], r["canary_percent"], r["action"]) for r in rows] == [
        (1, None, "v0", None, None, "promote"), (2, "v0", "v1", None, None, "promote"),
        (3, "v1", "v1", "v2", 10.0, "canary"), (4, "v1", "v1", "v2", 50.0, "canary"),
        (5, "v1", "v2", None, None, "promote-canary")]
    assert registry.store.get_json(registry.bucket, "ranker/history/0000000003.json") == started


def test_an_aborted_canary_leaves_the_live_version_and_its_rollback_target(live_v1):
    registry = live_v1
    _canary(registry, "v2", 5)
    dry = registry.plan_abort_canary(by="bob", reason="p99 latency up")
    assert dry.diff()["canary"]["to"] is None and _live_doc(registry)["canary"]["version"] == "v2"
    aborted = registry.commit(dry)
    assert (aborted["version"], aborted["previous"], aborted["canary"], aborted["action"], aborted["reason"]) == (
        "v1", "v0", None, "abort-canary", "p99 latency up")
    assert registry.plan_rollback(to=None, by="bob", reason="why").pointer["version"] == "v0"
    assert [(r["to"], r["canary"], r["action"]) for r in entries(registry.history())][-2:] == [
        ("v1", "v2", "canary"), ("v1", None, "abort-canary")]


def test_a_rollback_clears_a_running_canary(live_v1):
    registry = live_v1
    _canary(registry, "v2", 20)
    rolled = registry.commit(registry.plan_rollback(to=None, by="oncall", reason="errors"))
    assert (rolled["version"], rolled["previous"], rolled["canary"], rolled["action"]) == ("v0", "v1", None, "rollback")


@pytest.mark.parametrize(("setup", "attempt", "error", "message"), [
    pytest.param(None, lambda r: r.plan_canary(version="v1", percent=10, by="a", reason="r"),
                 RegistryError, "v1 is already live", id="the-live-version"),
    pytest.param(None, lambda r: r.plan_canary(version="nope", percent=10, by="a", reason="r"),
                 RegistryError, "version nope is not registered", id="an-unregistered-version"),
    pytest.param(None, lambda r: r.plan_canary(version="bad", percent=10, by="a", reason="r"),
                 RegistryError, "failed ONNX parity", id="a-parity-failure"),
    pytest.param(None, lambda r: r.plan_canary(version="v2", percent=0, by="a", reason="r"),
                 RegistryError, r"percent must be a number in \(0, 100\], got 0", id="zero-percent"),
    pytest.param(None, lambda r: r.plan_canary(version="v2", percent=100.5, by="a", reason="r"),
                 RegistryError, "got 100.5", id="over-100-percent"),
    pytest.param(None, lambda r: r.plan_canary(version="v2", percent=10, by="a", reason=" "),
                 RegistryError, "a canary needs a reason", id="no-reason"),
    pytest.param(None, lambda r: r.plan_canary(version="v2", percent=10, by="a", reason="r", expect_live="v0"),
                 PointerRaceLost, "live model is v1, not v0 as when v2 was gated", id="a-stale-champion"),
    pytest.param(None, lambda r: r.plan_promote_canary(by="a", reason="why"),
                 RegistryError, "no canary is running: nothing to promote", id="promote-without-canary"),
    pytest.param(None, lambda r: r.plan_abort_canary(by="a", reason="why"),
                 RegistryError, "no canary is running: nothing to abort", id="abort-without-canary"),
    pytest.param("v2", lambda r: r.plan_canary(version="v3", percent=10, by="a", reason="r"),
                 CanaryConflict, "a canary of v2 at 10% is running: promote it .* or abort it .* before starting "
                 "a canary of v3", id="a-second-canary"),
    pytest.param("v2", lambda r: r.plan_flip(version="v3", by="dag", reason="gate passed"),
                 CanaryConflict, "canary of v2 at 10% is running: .* before making v3 live", id="a-promotion"),
])
def test_a_refused_canary_action_changes_nothing(live_v1, setup, attempt, error, message):
    if setup:
        _canary(live_v1, setup, 10)
    before = _live_doc(live_v1)
    with pytest.raises(error, match=message):
        attempt(live_v1)
    assert _live_doc(live_v1) == before


def test_a_canary_needs_a_live_model(registry):
    _register(registry, "v1")
    with pytest.raises(RegistryError, match="no live model: a canary needs one"):
        registry.plan_canary(version="v1", percent=10, by="a", reason="r")
    assert registry.live() is None


def test_two_concurrent_canary_starts_exactly_one_wins(live_v1):
    registry = live_v1
    plans = [registry.plan_canary(version=v, percent=10, by=f"op-{v}", reason="race") for v in ("v2", "v3")]
    barrier, outcomes = threading.Barrier(2), {}

    def start(plan):
        barrier.wait()
        try:
            outcomes[plan.pointer["canary"]["version"]] = registry.commit(plan)
        except PointerRaceLost as exc:
            outcomes[plan.pointer["canary"]["version"]] = exc

    threads = [threading.Thread(target=start, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (winner,) = [v for v, o in outcomes.items() if isinstance(o, dict)]
    (loser,) = [v for v, o in outcomes.items() if isinstance(o, PointerRaceLost)]
    assert f"canary {loser} at 10%) was NOT applied and nothing was changed" in str(outcomes[loser])
    live = _live_doc(registry)
    assert live == outcomes[winner] and live["canary"]["version"] == winner and live["version"] == "v1"
    assert [(e["seq"], (e["canary"] or {}).get("version")) for e in registry.history()] == [
        (1, None), (2, None), (3, winner)]
    with pytest.raises(CanaryConflict, match=f"canary of {winner} at 10% is running"):
        registry.plan_canary(version=loser, percent=10, by="op", reason="retry")


@pytest.fixture
def lossy(embedded, registry):
    """The test's registry bucket through a proxy that can lose one answer of the real S3."""
    from urllib.parse import urlparse

    from feedloop.core.storage import ObjectStore
    from tests.support.lossy_proxy import ResponseLosingProxy

    proxy = ResponseLosingProxy(urlparse(embedded.s3.endpoint_url).port)
    try:
        store = ObjectStore(embedded.s3.model_copy(update={"endpoint_url": proxy.url}))
        yield proxy, Registry(store, registry.bucket)
    finally:
        proxy.close()


def test_a_flip_whose_answer_was_lost_is_reported_applied_and_recorded(lossy):
    """botocore retries the conditional PUT of live.json whose response was lost; the retry gets 412 against the
    first attempt's own write. The flip happened: it is reported, its history entry written, nothing raised."""
    proxy, registry = lossy
    _register(registry, "2026-11-05-aaaa")
    _register(registry, "2026-11-06-bbbb")
    first = registry.flip(version="2026-11-05-aaaa", by="dag", reason="first")
    proxy.lose_next_answer(f"PUT /{registry.bucket}/{registry.live_key}".encode())
    second = registry.flip(version="2026-11-06-bbbb", by="dag", reason="better")
    assert proxy.lost == 1  # the network did lose the answer, and botocore retried
    assert _live_doc(registry) == second and second["previous"] == first["version"]
    assert registry.history() == [first, second]

    proxy.lose_next_answer(f"PUT /{registry.bucket}/{registry.live_key}".encode())
    back = registry.commit(registry.plan_rollback(to=None, by="alice", reason="CTR down"))
    assert proxy.lost == 2 and _live_doc(registry) == back and registry.history()[-1] == back


def test_a_first_pointer_whose_answer_was_lost_is_reported_applied(lossy):
    proxy, registry = lossy
    _register(registry, "2026-11-05-aaaa")
    proxy.lose_next_answer(f"PUT /{registry.bucket}/{registry.live_key}".encode())
    first = registry.flip(version="2026-11-05-aaaa", by="dag", reason="first", expect_live=None)
    assert proxy.lost == 1 and _live_doc(registry) == first and registry.history() == [first]
