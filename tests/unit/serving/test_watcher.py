"""The pod's model watcher, tick by tick, on an in-memory store and a hand-driven clock.

Why a fake store here: these tests pin down interleavings (what one tick downloads, when a refused
version is tried again, what the cache names after a rollback) exactly; the same behaviours run
against the real embedded S3 and real pods in tests/integration/test_serving_chaos.py.
"""

from __future__ import annotations

import gc
import hashlib
import weakref
from pathlib import Path

import orjson
import pytest

from feedloop.core.config import ServingSettings
from feedloop.core.layout import RANKER_PREFIX as PREFIX
from feedloop.serving.model import MANIFEST, Root
from feedloop.serving.published_features import FeatureFollower
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.watcher import Watcher
from feedloop.core.storage import NOT_MODIFIED, StoredObject
from tests.support import servingdata

BUCKET = "models"
VERSIONS = Root(BUCKET, f"{PREFIX}versions/")
LIVE_KEY = f"{PREFIX}live.json"


class FakeStore:
    """Objects in a dict; counts every GET per key; `down` makes every call fail like an unreachable S3."""

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets: dict[str, int] = {}
        self.down = False

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.objects[(bucket, key)] = body

    def get(self, bucket: str, key: str) -> StoredObject | None:
        if self.down:
            raise ConnectionError("S3 is down")
        self.gets[key] = self.gets.get(key, 0) + 1
        body = self.objects.get((bucket, key))
        return None if body is None else StoredObject(body, hashlib.md5(body).hexdigest())

    def get_if_changed(self, bucket: str, key: str, etag: str | None) -> StoredObject | None:
        found = self.get(bucket, key)
        return NOT_MODIFIED if found is not None and found.etag == etag else found


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def good():
    """Two real versions (LightGBM -> ONNX, with their snapshots), trained once."""
    return [servingdata.make_version(f"2026-11-2{i}-a{i}b{i}", seed=i, rounds=5) for i in (1, 2)]


def register(store: FakeStore, v: servingdata.Version, *, manifest: dict | None = None) -> str:
    """Write the version's files and manifest as the registry does; returns the sha256 of model.onnx."""
    artifacts = {}
    for name, body in v.files.items():
        store.put(BUCKET, VERSIONS.key(v.version, name), body)
        artifacts[name] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    body = manifest if manifest is not None else {**v.manifest, "version": v.version, "artifacts": artifacts}
    store.put(BUCKET, VERSIONS.key(v.version, MANIFEST), orjson.dumps(body))
    return artifacts["model.onnx"]["sha256"]


def point(store: FakeStore, version: str, sha: str, *, seq: int, **extra) -> None:
    store.put(BUCKET, LIVE_KEY, orjson.dumps({"version": version, "uri": VERSIONS.uri(version), "sha256": sha,
                                              "seq": seq, **extra}))


def watcher(store: FakeStore, clock: Clock, cache_dir: Path) -> Watcher:
    cfg = ServingSettings(poll_interval_s=1.0, retry_initial_s=2.0, retry_max_s=8.0)
    features = FeatureFollower(store=store, bucket=BUCKET, key="features/live.json", cfg=cfg, clock=clock,
                               snapshots=Root(BUCKET, "features/snapshots/"))
    return Watcher(store=store, bucket=BUCKET, key=LIVE_KEY, versions=VERSIONS, cfg=cfg,
                   cache=LocalCache(cache_dir, VERSIONS), features=features, clock=clock)


def _malformed(manifest: dict) -> list:
    m = manifest
    fm = m["feature_manifest"]
    return [
        pytest.param([m], "manifest", id="manifest-is-a-list"),
        pytest.param({**m, "artifacts": list(m["artifacts"])}, "artifacts", id="artifacts-is-a-list"),
        pytest.param({**m, "artifacts": {**m["artifacts"], "model.onnx": "abc"}}, "artifacts", id="artifact-not-an-object"),
        pytest.param({**m, "feature_manifest": {**fm, "features": "all"}}, "feature_manifest", id="features-not-a-list"),
        pytest.param({**m, "feature_manifest": {**fm, "features": [{"kind": "numeric"}]}}, "feature_manifest",
                     id="feature-without-name"),
        pytest.param({**m, "sample": {"rows": [[1.0, 2.0]], "scores": [0.1]}}, "sample", id="sample-rows-wrong-width"),
        pytest.param({**m, "sample": {"rows": [["x"] * 3], "scores": ["y"]}}, "sample", id="sample-not-numbers"),
        pytest.param({**m, "logical_date": 20261121}, "logical_date", id="logical-date-not-text"),
        pytest.param({**m, "artifacts": {**m["artifacts"], "model.onnx": {"sha256": m["artifacts"]["model.onnx"]["sha256"],
                                                                         "bytes": -1}}}, "bytes", id="negative-size"),
    ]


def _registered_manifest(v: servingdata.Version) -> dict:
    artifacts = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in v.files.items()}
    return {**v.manifest, "version": v.version, "artifacts": artifacts}


@pytest.fixture(scope="module")
def broken_manifests(good):
    return {p.id: (p.values[0], p.values[1]) for p in _malformed(_registered_manifest(good[1]))}


@pytest.mark.parametrize("case", [p.id for p in _malformed({"artifacts": {"model.onnx": {"sha256": ""}},
                                                             "feature_manifest": {}, "sample": {}})])
def test_a_malformed_manifest_is_a_refusal_with_backoff_not_a_hot_loop(good, broken_manifests, tmp_path, case):
    one, two = good
    body, field = broken_manifests[case]
    store, clock = FakeStore(), Clock()
    point(store, one.version, register(store, one), seq=1)
    w = watcher(store, clock, tmp_path)
    w.tick()
    assert w.state.live.version == one.version
    sha = register(store, two, manifest=body)
    point(store, two.version, sha, seq=2)
    clock.now += 1.0
    w.tick()                                              # refused, not raised
    manifest_key = VERSIONS.key(two.version, MANIFEST)
    refusal = w.status.last_refusal
    assert (refusal.version, refusal.reason) == (two.version, "bad_manifest")
    assert field in refusal.message
    assert w.describe()["last_refusal"]["version"] == two.version
    assert w.describe()["refused"][two.version].startswith("bad_manifest")
    for _ in range(20):                                   # many ticks inside the backoff: no new download
        clock.now += 0.05
        w.tick()
    assert store.gets[manifest_key] == 1
    assert w.state.live.version == one.version
    clock.now += 2.0                                      # the first backoff (retry_initial_s) has passed
    w.tick()
    assert store.gets[manifest_key] == 2
    assert w.status.last_refusal.attempts == 2
    clock.now += 2.5                                      # the second backoff is 4 s: not yet
    w.tick()
    assert store.gets[manifest_key] == 2
    for _ in range(6):                                    # capped at retry_max_s (8 s)
        clock.now += 8.0
        w.tick()
    assert store.gets[manifest_key] == 8


def test_a_bug_while_loading_is_a_refusal_too(good, tmp_path, monkeypatch):
    """Whatever a load raises (here a bug in the build step) is refused with a reason and backed off."""
    one, two = good
    store, clock = FakeStore(), Clock()
    point(store, one.version, register(store, one), seq=1)
    w = watcher(store, clock, tmp_path)
    w.tick()
    point(store, two.version, register(store, two), seq=2)

    def broken_build(*_a, **_k):
        raise ZeroDivisionError("a bug in the build step")

    monkeypatch.setattr("feedloop.serving.watcher.build", broken_build)
    clock.now += 1.0
    w.tick()
    assert (w.status.last_refusal.version, w.status.last_refusal.reason) == (two.version, "unexpected_error")
    assert "ZeroDivisionError" in w.status.last_refusal.message
    assert w.state.live.version == one.version
    assert w.status.next_attempt >= clock.now + 2.0


def test_a_new_pointer_value_is_tried_at_once_while_a_refused_version_waits_its_backoff(good, tmp_path):
    one, two = good
    store, clock = FakeStore(), Clock()
    sha_one = register(store, one)
    point(store, one.version, sha_one, seq=1)
    w = watcher(store, clock, tmp_path)
    w.tick()
    bad = servingdata.Version("2026-11-25-bad", two.model_text, dict(two.files), dict(two.manifest))
    point(store, bad.version, "0" * 64, seq=2)            # names a version that does not exist
    clock.now += 1.0
    w.tick()
    assert w.status.last_refusal.reason == "missing_artifact"
    point(store, bad.version, "0" * 64, seq=3)            # the same broken version again: waits its backoff
    clock.now += 1.0
    w.tick()
    assert store.gets[VERSIONS.key(bad.version, MANIFEST)] == 1
    point(store, two.version, register(store, two), seq=4)  # a new version: tried at once
    clock.now += 1.0
    w.tick()
    assert w.state.live.version == two.version


def test_after_an_in_memory_rollback_the_local_cache_names_the_live_model(good, tmp_path):
    one, two = good
    store, clock = FakeStore(), Clock()
    sha_one, sha_two = register(store, one), register(store, two)
    point(store, one.version, sha_one, seq=1)
    w = watcher(store, clock, tmp_path)
    w.tick()
    point(store, two.version, sha_two, seq=2)
    clock.now += 1.0
    w.tick()
    assert w.state.live.version == two.version
    assert LocalCache(tmp_path, VERSIONS).load()[0].version == two.version
    point(store, one.version, sha_one, seq=3)             # rollback: one is still in memory (previous)
    clock.now += 1.0
    w.tick()
    assert w.state.live.version == one.version
    assert LocalCache(tmp_path, VERSIONS).load()[0].version == one.version
    store.down = True                                     # a cold start with S3 down serves what was live
    cold = watcher(store, Clock(), tmp_path)
    cold.tick()
    assert cold.state.live.version == one.version and cold.state.live.source == "cache"


def test_a_canary_promoted_in_memory_is_what_the_cache_names(good, tmp_path):
    one, two = good
    store, clock = FakeStore(), Clock()
    sha_one, sha_two = register(store, one), register(store, two)
    point(store, one.version, sha_one, seq=1, canary={"version": two.version, "uri": VERSIONS.uri(two.version),
                                                      "sha256": sha_two, "percent": 10})
    w = watcher(store, clock, tmp_path)
    w.tick()
    assert w.state.canary.version == two.version
    point(store, two.version, sha_two, seq=2)
    clock.now += 1.0
    w.tick()
    assert w.state.live.version == two.version
    assert LocalCache(tmp_path, VERSIONS).load()[0].version == two.version


@pytest.mark.parametrize("version, uri", [
    pytest.param("2026-11-21-a1b1", "s3://elsewhere/ranker/versions/2026-11-21-a1b1/", id="other-bucket"),
    pytest.param("2026-11-21-a1b1", "s3://models/other/versions/2026-11-21-a1b1/", id="other-prefix"),
    pytest.param("../../../../tmp/x", "s3://models/ranker/versions/../../../../tmp/x/", id="path-escaping-version"),
    pytest.param("2026-11-21-A1B1", "s3://models/ranker/versions/2026-11-21-A1B1/", id="not-the-version-pattern"),
    pytest.param("2026-11-21-a1b1", "s3://models/ranker/versions/x/../2026-11-21-a1b1/", id="dot-dot-in-uri"),
])
def test_a_pointer_naming_anything_but_a_version_folder_of_the_models_bucket_is_refused(good, tmp_path, version, uri):
    one, _ = good
    store, clock = FakeStore(), Clock()
    point(store, one.version, register(store, one), seq=1)
    w = watcher(store, clock, tmp_path)
    w.tick()
    store.put(BUCKET, LIVE_KEY, orjson.dumps({"version": version, "uri": uri, "sha256": "0" * 64, "seq": 2}))
    clock.now += 1.0
    w.tick()
    assert w.status.last_refusal.reason == "bad_pointer"
    assert w.state.live.version == one.version
    assert not any("elsewhere" in k or "other/" in k or ".." in k for k in store.gets)


def test_a_cache_naming_a_path_outside_itself_is_not_read(good, tmp_path):
    one, _ = good
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / MANIFEST).write_bytes(b"{}")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    target = {"version": "../outside", "uri": VERSIONS.uri("../outside"), "sha256": "0" * 64}
    (cache_dir / "last_good.json").write_bytes(orjson.dumps(target))
    assert LocalCache(cache_dir, VERSIONS).load() is None


def test_a_swapped_out_model_is_freed_by_reference_counting_alone(good, tmp_path):
    """The watcher asks for a malloc_trim after a swap but runs no gc.collect (a full collection held the GIL
    while requests waited): that is only right while a model holds no reference cycle."""
    one, two = good
    three = servingdata.make_version("2026-11-23-a3b3", seed=3, rounds=5)
    store, clock = FakeStore(), Clock()
    shas = [register(store, v) for v in (one, two, three)]
    w = watcher(store, clock, tmp_path)
    gc.collect()
    gc.disable()
    try:
        point(store, one.version, shas[0], seq=1)
        w.tick()
        first = weakref.ref(w.state.live)
        snapshot = weakref.ref(w.state.live.snapshot)
        for seq, (v, sha) in enumerate(((two, shas[1]), (three, shas[2])), start=2):
            clock.now += 1.0
            point(store, v.version, sha, seq=seq)
            w.tick()
        assert (w.state.live.version, w.state.previous.version) == (three.version, two.version)
        assert first() is None and snapshot() is None
        assert w.trimmer._wanted.is_set()          # the trim is asked for; the trimmer thread runs it
    finally:
        gc.enable()
