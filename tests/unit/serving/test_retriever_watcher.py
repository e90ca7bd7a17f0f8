"""The pod's retriever watcher, tick by tick, on an in-memory store (the real Registry) and a hand-driven clock.

A retriever goes live only when every one of its files has the registered sha256 and it warms up; a bad version
is refused with a reason, the one serving keeps serving, and a later good version is picked up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from feedloop.core.config import ServingSettings
from feedloop.core.storage import NOT_MODIFIED, StoredObject
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.model import Root
from feedloop.serving.retriever_watcher import LIVE_KEY, RetrieverWatcher
from tests.support import retrieverdata
from tests.unit.ingest.fakestore import FakeStore

BUCKET = "models"
ITEMS = [f"i{k:03d}" for k in range(60)]
TENANTS = ["acme" if k < 40 else "globex" for k in range(60)]
USERS = [f"u{k}" for k in range(10)]


class PolledStore(FakeStore):
    """FakeStore with the pods' conditional GET of the pointer, counting GETs of version files."""

    gets = 0

    def get(self, bucket: str, key: str) -> StoredObject | None:
        self.gets += "/versions/" in key
        return super().get(bucket, key)

    def get_if_changed(self, bucket: str, key: str, etag: str | None) -> StoredObject | None:
        found = self.get(bucket, key)
        return NOT_MODIFIED if found is not None and found.etag == etag else found


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _version(name: str, seed: int) -> retrieverdata.RetrieverVersion:
    return retrieverdata.make_version(name, item_ids=ITEMS, tenant_ids=TENANTS, user_ids=USERS, seed=seed)


@pytest.fixture(scope="module")
def versions():
    return [_version("2026-11-21-a1b1", 1), _version("2026-11-22-a2b2", 2), _version("2026-11-23-a3b3", 3)]


CFG = ServingSettings(poll_interval_s=1.0, retry_initial_s=2.0, retry_max_s=8.0, recommend_candidates=20)


def _watcher(store: PolledStore, clock: Clock, cache_dir: Path) -> RetrieverWatcher:
    cache = LocalCache(cache_dir, Root(BUCKET, "retriever/versions/"), keep=2)
    return RetrieverWatcher(store=store, bucket=BUCKET, cfg=CFG, cache=cache, clock=clock)


@pytest.fixture
def pod(tmp_path):
    store, clock = PolledStore(), Clock()
    return store, clock, _watcher(store, clock, tmp_path / "cache")


class DownStore(PolledStore):
    """S3 unreachable: every call fails as a connection error would."""

    def get(self, bucket: str, key: str) -> StoredObject | None:
        raise ConnectionError("could not connect to the endpoint")


def _step(clock: Clock, watcher: RetrieverWatcher, seconds: float = 1.0) -> None:
    clock.now += seconds
    watcher.tick()


def _tamper(store: PolledStore, version: str, name: str, body: bytes) -> None:
    store.put(BUCKET, f"retriever/versions/{version}/{name}", body)


def test_a_pod_without_a_retriever_says_what_is_missing(pod):
    store, clock, watcher = pod
    watcher.tick()
    assert watcher.state.live is None and "retriever/live.json does not exist yet" in watcher.missing()


def test_a_verified_retriever_goes_live_and_recommends_only_its_tenants_items(pod, versions):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    live = watcher.state.live
    assert live is not None and live.version == versions[0].version
    assert set(live.candidates("acme", "u1", 20)) <= set(ITEMS[:40]) and len(live.candidates("acme", "u1", 20)) == 20
    assert set(live.candidates("globex", "a-new-user", 50)) == set(ITEMS[40:])  # fewer items than asked: all
    assert live.candidates("initech", "u1", 20) == []


@pytest.mark.parametrize("name", ["users.parquet", "vocabs.json", "index/acme.faiss", "index/items.json"])
def test_a_file_whose_bytes_differ_from_the_manifest_is_refused_and_the_old_retriever_keeps_serving(pod, versions,
                                                                                                    name):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    retrieverdata.registry(store, BUCKET).register(version=versions[1].version, files=versions[1].files,
                                                   manifest=versions[1].manifest)
    body = versions[1].files[name]
    _tamper(store, versions[1].version, name, body[:-1] + bytes([body[-1] ^ 1]))  # same size, one bit flipped
    retrieverdata.registry(store, BUCKET).flip(version=versions[1].version, by="test", reason="test")
    _step(clock, watcher)
    assert watcher.state.live.version == versions[0].version
    refused = watcher.describe()["refused"][versions[1].version]
    assert refused.startswith("sha256_mismatch") and name in refused


def test_a_query_tower_other_than_the_pointers_is_refused(pod, versions):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    pointer = retrieverdata.publish(store, BUCKET, versions[1])
    store.put_json(BUCKET, LIVE_KEY, {**pointer, "sha256": hashlib.sha256(b"other").hexdigest()})
    _step(clock, watcher)
    assert watcher.state.live.version == versions[0].version
    assert watcher.describe()["refused"][versions[1].version].startswith("sha256_mismatch")


def test_an_index_that_does_not_fit_the_towers_is_refused(pod, versions):
    store, clock, watcher = pod
    other = retrieverdata.make_version("2026-11-24-a4b4", item_ids=ITEMS, tenant_ids=TENANTS, user_ids=USERS, seed=4,
                                       out_dim=8)
    files = {**versions[1].files, "index/acme.faiss": other.files["index/acme.faiss"]}
    bad = retrieverdata.RetrieverVersion("2026-11-24-a5b5", files, versions[1].manifest)
    retrieverdata.publish(store, BUCKET, bad)
    watcher.tick()
    assert watcher.state.live is None
    assert watcher.describe()["refused"][bad.version].startswith("bad_index")
    assert "refused" in watcher.missing()


def test_a_refused_version_waits_its_backoff_and_a_later_good_one_is_picked_up_at_once(pod, versions):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    reg = retrieverdata.registry(store, BUCKET)
    reg.register(version=versions[1].version, files=versions[1].files, manifest=versions[1].manifest)
    store.delete(BUCKET, f"retriever/versions/{versions[1].version}/index/globex.faiss")
    reg.flip(version=versions[1].version, by="test", reason="test")
    _step(clock, watcher)
    assert watcher.describe()["refused"][versions[1].version].startswith("missing_artifact")
    gets = store.gets
    _step(clock, watcher, 0.5)  # inside the 2 s backoff: nothing is downloaded again
    assert watcher.state.live.version == versions[0].version and watcher.pending is not None
    assert store.gets == gets
    retrieverdata.publish(store, BUCKET, versions[2])
    _step(clock, watcher)
    assert watcher.state.live.version == versions[2].version
    assert watcher.state.previous.version == versions[0].version


def test_a_rollback_to_the_previous_retriever_is_an_in_memory_swap(pod, versions):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    first = watcher.state.live
    retrieverdata.publish(store, BUCKET, versions[1])
    _step(clock, watcher)
    retrieverdata.registry(store, BUCKET).flip(version=versions[0].version, by="test", reason="rollback",
                                               action="rollback")
    _step(clock, watcher)
    assert watcher.state.live is first and watcher.state.previous.version == versions[1].version


def test_a_pointer_that_is_not_json_is_refused_and_changes_nothing(pod, versions):
    store, clock, watcher = pod
    retrieverdata.publish(store, BUCKET, versions[0])
    watcher.tick()
    store.put(BUCKET, LIVE_KEY, b"{not json")
    _step(clock, watcher)
    assert watcher.state.live.version == versions[0].version
    assert orjson.dumps(watcher.describe())  # /version can always render it
    assert watcher.describe()["refused"]["retriever/live.json"].startswith("bad_pointer")


def test_a_cold_start_with_s3_down_recommends_with_the_last_live_retriever_verified_again(tmp_path, versions):
    store, clock = PolledStore(), Clock()
    first = _watcher(store, clock, tmp_path / "cache")
    retrieverdata.publish(store, BUCKET, versions[0])
    first.tick()
    retrieverdata.publish(store, BUCKET, versions[1])
    _step(clock, first)
    assert first.state.live.version == versions[1].version

    restarted = _watcher(DownStore(), Clock(), tmp_path / "cache")   # the pod restarts while S3 is down
    restarted.tick()
    live = restarted.state.live
    assert live is not None and live.version == versions[1].version
    assert live.candidates("acme", "u1", 20) == first.state.live.candidates("acme", "u1", 20)
    assert restarted.last_error.startswith(f"cannot read s3://{BUCKET}/{LIVE_KEY}")

    index = tmp_path / "cache" / versions[1].version / "index" / "acme.faiss"
    index.write_bytes(index.read_bytes()[:-1] + b"\x00")                  # a disk that flipped a byte
    tampered = _watcher(DownStore(), Clock(), tmp_path / "cache")
    tampered.tick()
    assert tampered.state.live is None
    assert tampered.describe()["refused"][versions[1].version].startswith("sha256_mismatch")


def test_with_nothing_cached_and_s3_down_the_pod_says_why_it_cannot_recommend(tmp_path):
    watcher = _watcher(DownStore(), Clock(), tmp_path / "cache")
    watcher.tick()
    assert watcher.state.live is None and "cannot read s3://models/retriever/live.json" in watcher.missing()
