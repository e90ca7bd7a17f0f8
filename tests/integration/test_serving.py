"""Serving pods for real: uvicorn processes on free ports, the session's S3 and Kafka, registered ONNX versions.

Each test has its own models bucket and topic, so pods follow a pointer no other test touches.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pytest

from feedloop.contract import events, impression_lists
from feedloop.features import definitions as features
from feedloop.promotion.registry import Registry
from feedloop.serving.pods import Pods
from feedloop.serving.snapshot import Snapshot
from feedloop.core.process import free_port
from tests.support import servingdata
from tests.support.netproxy import TcpProxy

pytestmark = pytest.mark.integration
POLL = "0.3"


@pytest.fixture(scope="module")
def versions():
    """Three good versions, trained once (different seeds: different snapshots and scores); ids of the
    registry's pattern (date-hex), the only ones a pod follows."""
    return {name: servingdata.make_version(f"2026-11-2{i}-{i:x}0e", seed=i)
            for i, name in enumerate(("one", "two", "three"), start=1)}


@pytest.fixture
def world(embedded, store, topic, tmp_path):
    """A fresh models bucket and topic, and a factory of pods following them (stopped at the end)."""
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"models_bucket": bucket}),
        "state_dir": tmp_path, "kafka": embedded.kafka.model_copy(update={"topic": topic})})
    started: list[Pods] = []

    def pods(replicas: int = 1, *, workers: int = 1, cache: str = "cache", **env: str) -> Pods:
        environ = {"FEEDLOOP_S3__MODELS_BUCKET": bucket, "FEEDLOOP_KAFKA__TOPIC": topic,
                   "FEEDLOOP_SERVING__POLL_INTERVAL_S": POLL, "FEEDLOOP_SERVING__RETRY_INITIAL_S": "0.2",
                   "FEEDLOOP_SERVING__RETRY_MAX_S": "1", "FEEDLOOP_SERVING__CACHE_DIR": str(tmp_path / cache),
                   "FEEDLOOP_STATE_DIR": str(tmp_path),
                   "FEEDLOOP_SERVING__SIMULATED_TIME": "true", **env}  # requests carry the fixed ts of the test world
        p = Pods(settings, port=_free_ports(replicas), replicas=replicas, workers=workers, env=environ)
        started.append(p)
        p.start()
        return p

    yield SimpleNamespace(settings=settings, registry=Registry(store, bucket), store=store, bucket=bucket,
                          topic=topic, pods=pods)
    for p in started:
        p.stop()


def _free_ports(n: int) -> int:
    """A free block below the kernel's ephemeral range (a pod's own S3/Kafka connections use that range)."""
    import random

    from feedloop.core.process import port_in_use

    for _ in range(200):
        base = random.randrange(20_000, 32_000 - n)
        if not any(port_in_use(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free ports")


def _request(user: str = "acme-u001", n: int = 40, seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    items = list(rng.choice(servingdata.ITEMS, n - 2, replace=False)) + ["acme-new-1", "acme-new-2"]  # 2 unknown
    return {"tenant_id": "acme", "user_id": user, "surface": "feed", "device": "ios",
            "ts": "2026-11-24T10:00:00.000Z", "candidates": [{"item_id": i} for i in items], **extra}


def _publish(world, v: servingdata.Version) -> None:
    servingdata.register(world.registry, v)
    servingdata.flip(world.registry, v.version)


def _metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- readiness and the ranking contract -------------------------------------------------------------

def test_a_pod_without_a_model_is_alive_but_not_ready(world):
    url = world.pods().urls[0]
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.headers["x-model-version"] == "none"
    assert httpx.post(f"{url}/rank", json=_request()).status_code == 503


def test_rank_orders_candidates_with_the_live_model_exactly_as_lightgbm_scores_them(world, versions):
    v = versions["one"]
    pods = world.pods()
    _publish(world, v)
    pods.wait_for(v.version, timeout=30)
    request = _request(user="acme-u039", request_id="req-parity")  # a user unknown to the snapshot
    resp = httpx.post(f"{pods.urls[0]}/rank", json=request)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["x-model-version"] == body["model_version"] == v.version
    assert body["request_id"] == "req-parity"
    assert len(body["items"]) == len(request["candidates"])
    scores = [it["score"] for it in body["items"]]
    if not body["explore"]:
        assert scores == sorted(scores, reverse=True)
    # The same rows through LightGBM (not ONNX): the pod's features and scores are the training path's.
    snapshot = Snapshot.from_parquet({k[len("features/"):]: b for k, b in v.files.items() if k.startswith("features/")})
    served = {it["item_id"]: it["score"] for it in body["items"]}
    items = list(served)
    authors = snapshot.authors(items, [None] * len(items))
    inputs = snapshot.inputs(tenant_id="acme", user_id="acme-u039", surface="feed", device="ios",
                             request_ts=events.parse_ts(request["ts"]).timestamp(), item_ids=items, author_ids=authors)
    expected = lgb.Booster(model_str=v.model_text).predict(features.derive(inputs, features.categories(["acme", "globex"])))
    assert np.max(np.abs(np.array([served[i] for i in items]) - expected)) <= 1e-5
    assert {it["author_id"] for it in body["items"] if it["item_id"].startswith("acme-i")} <= set(servingdata.AUTHORS)
    limited = httpx.post(f"{pods.urls[0]}/rank", json={**request, "limit": 5}).json()
    assert len(limited["items"]) == 5 and [it["position"] for it in limited["items"]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("change, status, field", [
    pytest.param({"surface": "home"}, 422, "surface", id="unknown-surface"),
    pytest.param({"user_id": ""}, 422, "user_id", id="empty-user"),
    pytest.param({"tenant_id": None}, 422, "tenant_id", id="missing-tenant"),
    pytest.param({"ts": "yesterday"}, 422, "ts", id="bad-timestamp"),
    pytest.param({"limit": 0}, 422, "limit", id="limit-zero"),
    pytest.param({"candidates": []}, 422, "candidates", id="no-candidates"),
    pytest.param({"candidates": [{"item_id": 5}]}, 422, "item_id", id="item-not-a-string"),
    pytest.param({"candidates": [{"item_id": "a"}, {"item_id": "a"}]}, 422, "item_id", id="duplicate-item"),
    pytest.param({"candidates": [{"item_id": f"i{i}"} for i in range(1001)]}, 413, "candidates", id="too-many"),
])
def test_a_malformed_or_oversized_request_is_refused_naming_the_field(world, versions, change, status, field):
    pods = world.pods()
    _publish(world, versions["one"])
    pods.wait_for(versions["one"].version, timeout=30)
    resp = httpx.post(f"{pods.urls[0]}/rank", json={**_request(), **change})
    assert resp.status_code == status, resp.text
    assert field in orjson.dumps(resp.json()["detail"]).decode()
    assert httpx.get(f"{pods.urls[0]}/readyz").status_code == 200


def test_a_body_over_the_limit_and_invalid_json_are_refused(world, versions):
    pods = world.pods()
    url = pods.urls[0]
    big = b'{"x": "' + b"a" * 2_000_000 + b'"}'
    assert httpx.post(f"{url}/rank", content=big, headers={"content-type": "application/json"}).status_code == 413
    bad = httpx.post(f"{url}/rank", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and "not valid JSON" in bad.text
    assert httpx.get(f"{url}/healthz").status_code == 200


# ---- hot swap -------------------------------------------------------------------------------------

class Load:
    """Continuous /rank traffic against every pod until stopped; records every status and version."""

    def __init__(self, urls: list[str], threads: int = 3):
        self.urls, self.statuses, self.versions = urls, Counter(), Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, k: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                url = self.urls[(i + k) % len(self.urls)]
                try:
                    resp = client.post(f"{url}/rank", json=_request(user=f"acme-u{i % 40:03d}", seed=i))
                    self.statuses[resp.status_code] += 1
                    self.versions[resp.headers.get("x-model-version")] += 1
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                i += 1


def test_flips_and_a_rollback_under_continuous_load_fail_no_request(world, versions):
    one, two = versions["one"], versions["two"]
    pods = world.pods(2)
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    servingdata.register(world.registry, two)
    with Load(pods.urls) as load:
        time.sleep(1)
        servingdata.flip(world.registry, two.version)
        pods.wait_for(two.version, timeout=30)
        time.sleep(1)
        world.registry.commit(world.registry.plan_rollback(to=None, by="tests", reason="rollback under load"))
        seconds = pods.wait_for(one.version, timeout=30)
        time.sleep(1)
    assert set(load.statuses) == {200}, load.statuses
    assert load.versions[one.version] > 0 and load.versions[two.version] > 0
    assert seconds < 5
    for url in pods.urls:
        described = httpx.get(f"{url}/version").json()
        assert described["live"]["version"] == one.version
        assert described["previous"]["version"] == two.version
        assert _metric(url, "feedloop_live_model", version=one.version, role="live") == 1
        assert _metric(url, "feedloop_live_model", version=two.version, role="live") == 0


def _tamper(world, v: servingdata.Version, name: str, body: bytes) -> None:
    servingdata.register(world.registry, v)
    world.store.put(world.bucket, world.registry.version_key(v.version, name), body)


def _refusal_cases():
    def hash_mismatch(world, v):
        onnx = v.files["model.onnx"]
        _tamper(world, v, "model.onnx", onnx[:-8] + bytes(8))

    def truncated(world, v):
        _tamper(world, v, "model.onnx", v.files["model.onnx"][: len(v.files["model.onnx"]) // 2])

    def invalid_onnx(world, v):
        v.files["model.onnx"] = b"this is not an onnx graph" * 10
        servingdata.register(world.registry, v)

    def changed_inputs(world, v):
        v.files["model.onnx"] = _onnx_with_features(v.model_text, len(features.FEATURES) - 1)
        servingdata.register(world.registry, v)

    def nan_scores(world, v):
        v.files["model.onnx"] = servingdata.nan_onnx(v.files["model.onnx"])
        servingdata.register(world.registry, v)

    def wrong_snapshot(world, v):
        _tamper(world, v, "features/item.parquet", b"PAR1 not parquet")

    return [pytest.param(hash_mismatch, "sha256_mismatch", id="hash-mismatch"),
            pytest.param(truncated, "truncated", id="truncated-file"),
            pytest.param(invalid_onnx, "invalid_onnx", id="invalid-onnx"),
            pytest.param(changed_inputs, "signature_mismatch", id="changed-inputs"),
            pytest.param(nan_scores, "nan_scores", id="nan-scores"),
            pytest.param(wrong_snapshot, "truncated", id="snapshot-bytes-changed")]


def _onnx_with_features(model_text: str, n: int) -> bytes:
    """A model over n features (a different input signature than the manifest's)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(0)
    data = lgb.Dataset(rng.normal(size=(200, n)), label=rng.integers(0, 2, 200), params={"verbosity": -1})
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, data, num_boost_round=3)
    return onnxmltools.convert_lightgbm(booster, initial_types=[("input", FloatTensorType([None, n]))],
                                        zipmap=False, target_opset=15).SerializeToString()


@pytest.mark.parametrize("make_bad, reason", _refusal_cases())
def test_a_bad_version_is_refused_the_old_model_keeps_serving_and_a_later_good_one_is_picked_up(
        world, versions, make_bad, reason):
    one, two = versions["one"], versions["two"]
    pods = world.pods()
    url = pods.urls[0]
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    bad = servingdata.make_version(f"2026-11-23-bad{servingdata.sha256(reason.encode())[:6]}", seed=5, rounds=5)
    make_bad(world, bad)
    with Load(pods.urls, threads=1) as load:
        servingdata.flip(world.registry, bad.version)
        deadline = time.monotonic() + 20
        while _metric(url, "feedloop_swap_failures_total", reason=reason) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # refused, and retried at least once
    assert _metric(url, "feedloop_swap_failures_total", reason=reason) >= 2
    assert set(load.statuses) == {200} and set(load.versions) == {one.version}
    described = httpx.get(f"{url}/version").json()
    assert described["live"]["version"] == one.version
    assert described["refused"][bad.version].startswith(reason)
    servingdata.register(world.registry, two)
    servingdata.flip(world.registry, two.version)
    pods.wait_for(two.version, timeout=30)


def test_a_pointer_that_is_not_valid_json_or_misses_a_field_is_ignored(world, versions):
    one, two = versions["one"], versions["two"]
    pods = world.pods()
    url = pods.urls[0]
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    key = world.registry.live_key
    good = world.registry.live().pointer
    for body in (b'{"version": "x", "ur', orjson.dumps({**good, "sha256": None})):
        before = _metric(url, "feedloop_swap_failures_total", reason="bad_pointer")
        world.store.put(world.bucket, key, body)
        deadline = time.monotonic() + 10
        while _metric(url, "feedloop_swap_failures_total", reason="bad_pointer") <= before:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.post(f"{url}/rank", json=_request()).headers["x-model-version"] == one.version
    servingdata.register(world.registry, two)
    world.store.put_json(world.bucket, key, {**good, "seq": good["seq"] + 1, "version": two.version,
                                             "uri": world.registry.version_uri(two.version),
                                             "sha256": servingdata.sha_of_onnx(world.registry, two.version)})
    pods.wait_for(two.version, timeout=30)


# ---- S3 and Kafka outages -------------------------------------------------------------------------------

def test_with_s3_unreachable_a_pod_keeps_serving_reports_staleness_and_cold_starts_from_its_copy(world, versions):
    one = versions["one"]
    proxy = TcpProxy(int(world.settings.s3.endpoint_url.rsplit(":", 1)[1]))
    try:
        via_proxy = {"FEEDLOOP_S3__ENDPOINT_URL": proxy.url}
        pods = world.pods(**via_proxy)
        url = pods.urls[0]
        _publish(world, one)
        pods.wait_for(one.version, timeout=30)
        proxy.cut()
        time.sleep(3)
        assert httpx.post(f"{url}/rank", json=_request()).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        stale = _metric(url, "feedloop_pointer_staleness_seconds")
        assert stale >= 2, stale
        # every failed poll is counted; how many fit in 3 s depends on the S3 client's retries on a busy machine
        deadline = time.monotonic() + 30
        while _metric(url, "feedloop_poll_errors_total") < 3:
            assert time.monotonic() < deadline, _metric(url, "feedloop_poll_errors_total")
            time.sleep(0.3)
        assert httpx.get(f"{url}/version").json()["pointer"]["last_error"].startswith("cannot read")
        # A new pod while S3 is down: serves its last-known-good local copy (the same cache folder).
        cold = world.pods(**via_proxy)
        deadline = time.monotonic() + 30
        while httpx.get(f"{cold.urls[0]}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "cold start did not use the local copy"
            time.sleep(0.3)
        assert httpx.get(f"{cold.urls[0]}/version").json()["live"]["source"] == "cache"
        # ... and one without a copy stays not ready.
        empty = world.pods(cache="empty-cache", **via_proxy)
        time.sleep(2)
        assert httpx.get(f"{empty.urls[0]}/readyz").status_code == 503
        proxy.restore()
        empty.wait_for(one.version, timeout=30)
    finally:
        proxy.close()


def test_impressions_reach_kafka_with_the_model_version_and_the_ingest_dag_lands_them(world, versions, airflow_cli):
    from tests.support.kafka_helpers import lake_rows

    one = versions["one"]
    pods = world.pods()
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    served = [httpx.post(f"{pods.urls[0]}/rank", json=_request(seed=i, request_id=f"r{i}", limit=10)).json()
              for i in range(20)]
    records = _consume(world.settings.kafka, world.topic, expect=20, timeout=30)
    assert len(records) == 20  # one record per served list, expanded by the sink
    parsed = [e for r in records for e in impression_lists.events_in(r.value)]
    assert len(parsed) == 200 and not any(events.check_event(e) for e in parsed)
    assert {e["model_version"] for e in parsed} == {one.version}
    assert {e["event_type"] for e in parsed} == {"impression"}
    by_request = {(e["request_id"], e["position"]): e["item_id"] for e in parsed}
    for s in served:
        for it in s["items"]:
            assert by_request[(s["request_id"], it["position"])] == it["item_id"]
    assert all(re.fullmatch(r"r\d+-p0\d\d-impression", e["event_id"]) for e in parsed)
    assert {r.timestamp for r in records} == {int(events.parse_ts("2026-11-24T10:00:00.000Z").timestamp() * 1000)}
    done = airflow_cli("dags", "test", "ingest_engagement", "2026-11-24T10:15:00+00:00",
                       env_extra={"FEEDLOOP_KAFKA__TOPIC": world.topic})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    landed = lake_rows(world.store, world.settings, world.topic)
    assert landed.num_rows == 200
    assert set(landed["model_version"].to_pylist()) == {one.version}


def _consume(kafka, topic: str, *, expect: int, timeout: float) -> list:
    from kafka import TopicPartition

    from feedloop.core.streams import consumer

    c = consumer(kafka)
    try:
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        out, deadline = [], time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        c.close()


def test_with_kafka_down_requests_still_succeed_and_dropped_impressions_are_counted(world, versions):
    one = versions["one"]
    pods = world.pods(FEEDLOOP_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
                      FEEDLOOP_SERVING__IMPRESSION_BUFFER="100")
    url = pods.urls[0]
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    t0 = time.perf_counter()
    statuses = [httpx.post(f"{url}/rank", json=_request(seed=i, limit=10)).status_code for i in range(60)]
    assert set(statuses) == {200}
    assert time.perf_counter() - t0 < 30
    deadline = time.monotonic() + 30
    while _metric(url, "feedloop_impressions_dropped_total") < 500:
        assert time.monotonic() < deadline, _metric(url, "feedloop_impressions_dropped_total")
        time.sleep(0.5)


# ---- canary and metrics ----------------------------------------------------------------------------------

def test_a_canary_gets_a_stable_share_of_users_near_its_percent(world, versions):
    one, two = versions["one"], versions["two"]
    pods = world.pods(2)
    _publish(world, one)
    servingdata.register(world.registry, two)
    live = world.registry.live()
    canary = {"version": two.version, "uri": world.registry.version_uri(two.version),
              "sha256": servingdata.sha_of_onnx(world.registry, two.version), "percent": 20}
    world.store.put_json(world.bucket, world.registry.live_key, {**live.pointer, "seq": live.pointer["seq"] + 1,
                                                                 "canary": canary}, if_match=live.etag)
    deadline = time.monotonic() + 30
    while not all((httpx.get(f"{u}/version").json().get("canary") or {}).get("version") == two.version
                  for u in pods.urls):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    users = [f"acme-u{i:05d}" for i in range(600)]
    first = {}
    with httpx.Client(timeout=10) as client:
        for k, user in enumerate(users):
            resp = client.post(f"{pods.urls[k % 2]}/rank", json=_request(user=user, n=5))
            first[user] = resp.headers["x-model-version"]
        again = {u: client.post(f"{pods.urls[(k + 1) % 2]}/rank", json=_request(user=u, n=5)).headers["x-model-version"]
                 for k, u in enumerate(users[:200])}
    assert all(first[u] == again[u] for u in again)  # stable per user, across pods
    share = sum(v == two.version for v in first.values()) / len(first)
    assert 0.14 <= share <= 0.26, share
    assert _metric(pods.urls[0], "feedloop_request_seconds_count", route="/rank", model_version=two.version) > 0


def test_metrics_are_merged_across_worker_processes(world, versions):
    one = versions["one"]
    pods = world.pods(workers=2)
    url = pods.urls[0]
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    with httpx.Client(timeout=10) as client:
        for i in range(40):
            assert client.post(f"{url}/rank", json=_request(seed=i), headers={"connection": "close"}).status_code == 200
    assert _metric(url, "feedloop_responses_total", route="/rank", status="200") == 40
    assert _metric(url, "feedloop_candidates_per_request_count") == 40
    text = httpx.get(f"{url}/metrics").text
    for name in ("feedloop_live_model", "feedloop_request_seconds_bucket", "feedloop_swap_seconds_bucket",
                 "feedloop_pointer_staleness_seconds"):
        assert name in text, name


# ---- published feature snapshots (features/live.json) -----------------------------------------------------

def _snapshot_in_use(url: str, role: str = "live") -> dict:
    return (httpx.get(f"{url}/version").json()[role] or {}).get("features") or {}


def _wait_for_snapshot(pods: Pods, snapshot_id: str, *, role: str = "live", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(_snapshot_in_use(u, role).get("id") == snapshot_id for u in pods.urls):
        assert time.monotonic() < deadline, [_snapshot_in_use(u, role) for u in pods.urls]
        time.sleep(0.2)


def _lightgbm_scores(v: servingdata.Version, seed: int, request: dict, items: list[str]) -> np.ndarray:
    """What LightGBM gives `items` of `request` with the features of the world drawn with `seed`."""
    files = servingdata.snapshot_files(seed)
    snapshot = Snapshot.from_parquet({k[len("features/"):]: b for k, b in files.items()})
    inputs = snapshot.inputs(tenant_id="acme", user_id=request["user_id"], surface="feed", device="ios",
                             request_ts=events.parse_ts(request["ts"]).timestamp(), item_ids=items,
                             author_ids=snapshot.authors(items, [None] * len(items)))
    return lgb.Booster(model_str=v.model_text).predict(features.derive(inputs, features.categories(["acme", "globex"])))


def test_pods_move_to_each_newer_feature_snapshot_and_a_flipped_model_too_under_load_failing_no_request(
        world, versions):
    one, two = versions["one"], versions["two"]          # trained for 2026-11-21 / -22: own counts as of -22 / -23
    pods = world.pods(2)
    _publish(world, one)
    pods.wait_for(one.version, timeout=30)
    own = _snapshot_in_use(pods.urls[0])
    assert (own["id"], own["as_of"], own["source"]) == (f"{one.version}/features", "2026-11-22", "registered")
    servingdata.register(world.registry, two)
    with Load(pods.urls) as load:
        first = servingdata.publish_snapshot(world.store, world.bucket, seed=11, as_of="2026-11-24")
        _wait_for_snapshot(pods, first.snapshot_id)
        time.sleep(0.5)
        second = servingdata.publish_snapshot(world.store, world.bucket, seed=12, as_of="2026-11-25")
        _wait_for_snapshot(pods, second.snapshot_id)
        servingdata.flip(world.registry, two.version)
        pods.wait_for(two.version, timeout=30)
        _wait_for_snapshot(pods, second.snapshot_id)     # the new live model scores with the newest snapshot too
        time.sleep(0.5)
    assert set(load.statuses) == {200}, load.statuses
    assert first.pointer == second.pointer == "moved" and second.seq == first.seq + 1
    for url in pods.urls:
        described = httpx.get(f"{url}/version").json()
        assert described["live"]["features"]["source"] == "published"
        assert described["live"]["features"]["as_of"] == "2026-11-25"
        assert described["previous"]["version"] == one.version
        assert described["previous"]["features"]["id"] == second.snapshot_id
        assert described["features"]["seq"] == second.seq and described["features"]["refused"] == {}
        assert _metric(url, "feedloop_feature_snapshot", snapshot=second.snapshot_id, role="live") == 1
        assert _metric(url, "feedloop_feature_snapshot", snapshot=first.snapshot_id, role="live") == 0
        assert _metric(url, "feedloop_feature_snapshot_swaps_total") == 2
        age = _metric(url, "feedloop_feature_snapshot_age_seconds")
        since_as_of = time.time() - datetime(2026, 11, 25, tzinfo=timezone.utc).timestamp()
        assert since_as_of - 10 <= age <= since_as_of
    # The pods' scores are LightGBM's on the features of the newest snapshot, not the model's own.
    request = _request(user="acme-u003", request_id="req-fresh")
    body = httpx.post(f"{pods.urls[0]}/rank", json=request).json()
    items = [it["item_id"] for it in body["items"]]
    served = np.array([it["score"] for it in body["items"]])
    assert np.max(np.abs(served - _lightgbm_scores(two, 12, request, items))) <= 1e-5
    assert np.max(np.abs(served - _lightgbm_scores(two, 2, request, items))) > 1e-3  # its own snapshot differs


def _bad_snapshots():
    def flip_a_byte(files: dict[str, bytes]) -> None:
        body = files["item.parquet"]
        files["item.parquet"] = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]

    def cut_in_half(files: dict[str, bytes]) -> None:
        files["items.parquet"] = files["items.parquet"][: len(files["items.parquet"]) // 2]

    def wrong_sha256(world):
        return servingdata.publish_snapshot(world.store, world.bucket, seed=22, as_of="2026-11-26", damage=flip_a_byte)

    def truncated(world):
        return servingdata.publish_snapshot(world.store, world.bucket, seed=22, as_of="2026-11-26", damage=cut_in_half)

    def missing_column(world):
        return servingdata.publish_snapshot(world.store, world.bucket, seed=22, as_of="2026-11-26",
                                            drop="user_click_28d")

    return [pytest.param(wrong_sha256, "sha256_mismatch", id="wrong-sha256"),
            pytest.param(truncated, "truncated", id="truncated-file"),
            pytest.param(missing_column, "bad_snapshot", id="missing-column")]


@pytest.mark.parametrize("make_bad, reason", _bad_snapshots())
def test_a_bad_feature_snapshot_is_refused_the_old_keeps_serving_and_a_later_good_one_is_picked_up(
        world, versions, make_bad, reason):
    one = versions["one"]
    pods = world.pods()
    url = pods.urls[0]
    _publish(world, one)
    good = servingdata.publish_snapshot(world.store, world.bucket, seed=21, as_of="2026-11-25")
    _wait_for_snapshot(pods, good.snapshot_id)
    with Load(pods.urls, threads=1) as load:
        bad = make_bad(world)
        deadline = time.monotonic() + 20
        while _metric(url, "feedloop_feature_snapshot_refusals_total", reason=reason) < 2:
            assert time.monotonic() < deadline, httpx.get(f"{url}/version").json()["features"]
            time.sleep(0.2)  # refused, and retried at least once
    assert set(load.statuses) == {200} and set(load.versions) == {one.version}
    described = httpx.get(f"{url}/version").json()
    assert described["live"]["features"]["id"] == good.snapshot_id
    assert described["features"]["refused"][bad.snapshot_id].startswith(reason)
    assert _metric(url, "feedloop_feature_snapshot_swaps_total") == 1
    fixed = servingdata.publish_snapshot(world.store, world.bucket, seed=23, as_of="2026-11-27")
    _wait_for_snapshot(pods, fixed.snapshot_id)
    assert httpx.get(f"{url}/version").json()["features"]["refused"] == {}


def test_a_published_snapshot_not_newer_than_the_models_own_counts_is_not_used(world, versions):
    three = versions["three"]                            # trained for 2026-11-23: own counts as of 2026-11-24
    pods = world.pods()
    url = pods.urls[0]
    servingdata.publish_snapshot(world.store, world.bucket, seed=31, as_of="2026-11-23")
    _publish(world, three)
    pods.wait_for(three.version, timeout=30)
    same_day = servingdata.publish_snapshot(world.store, world.bucket, seed=32, as_of="2026-11-24")
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/version").json()["features"]["seq"] != same_day.seq:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)  # several more polls
    assert _snapshot_in_use(url)["id"] == f"{three.version}/features"
    assert _metric(url, "feedloop_feature_snapshot_swaps_total") == 0
    newer = servingdata.publish_snapshot(world.store, world.bucket, seed=33, as_of="2026-11-25")
    _wait_for_snapshot(pods, newer.snapshot_id)
