"""POST /recommend on a real pod: the session's S3 and Kafka, a registered ranker and retriever, one pod start.

Why one test: the behaviours follow each other on one pod (no retriever yet -> 503 naming it while /rank works;
a retriever flipped live -> lists of the tenant's items ranked by the live ranker with both versions in the
headers, /version and the impression records; a bad retriever refused while the good one keeps serving), and a
pod start is the expensive part.
"""

from __future__ import annotations

import time

import httpx
import pytest

from feedloop.contract import events, impression_lists
from feedloop.serving.client import RankingClient
from tests.integration.test_serving import _consume, _publish, _request, world  # noqa: F401 - world is a fixture
from tests.support import retrieverdata, servingdata

pytestmark = pytest.mark.integration
OTHER_TENANT = [f"globex-i{k:03d}" for k in range(50)]


def _retriever(version: str, seed: int) -> retrieverdata.RetrieverVersion:
    return retrieverdata.make_version(version, item_ids=servingdata.ITEMS + OTHER_TENANT,
                                      tenant_ids=["acme"] * len(servingdata.ITEMS) + ["globex"] * len(OTHER_TENANT),
                                      user_ids=servingdata.USERS[:20], seed=seed)


def _retriever_live(url: str, version: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = httpx.get(f"{url}/version", timeout=5).json()["retriever"]
        if (described["live"] or {}).get("version") == version:
            return described
        time.sleep(0.2)
    raise AssertionError(f"retriever {version} not live after {timeout}s: {described}")


def _body() -> dict:
    return {"tenant_id": "acme", "user_id": "acme-u001", "surface": "feed", "device": "ios",
            "ts": "2026-11-24T10:00:00.000Z", "limit": 10}


def _recommend(url: str, **changes) -> httpx.Response:
    return httpx.post(f"{url}/recommend", json={**_body(), **changes}, timeout=10)


def test_recommend_retrieves_the_tenants_items_ranks_them_and_logs_both_versions(world):
    ranker, good, bad = (servingdata.make_version("2026-11-21-1a0e", seed=1), _retriever("2026-11-22-2b0e", 2),
                         _retriever("2026-11-23-3c0e", 3))
    pods = world.pods()
    url = pods.urls[0]
    _publish(world, ranker)
    pods.wait_for(ranker.version, timeout=60)

    missing = _recommend(url)
    assert missing.status_code == 503 and "no retriever" in missing.json()["detail"]
    client = RankingClient([url])  # what the simulator's /recommend arm uses: None -> it asks /rank instead
    assert client.recommend({**_body(), "request_id": "rec-client-503"}) is None
    assert "retriever/live.json does not exist yet" in missing.json()["detail"]
    assert httpx.post(f"{url}/rank", json=_request()).status_code == 200
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] and "503 until a retriever is loaded" in ready["recommend"]

    retrieverdata.publish(world.store, world.bucket, good)
    _retriever_live(url, good.version)
    served = []
    for i, user in enumerate(["acme-u001", "acme-u039", "someone-new"]):  # known, unknown to the retriever, new
        resp = _recommend(url, user_id=user, request_id=f"rec{i}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-model-version"] == ranker.version
        assert resp.headers["x-retriever-version"] == good.version
        body = resp.json()
        assert body["retriever_version"] == good.version and len(body["items"]) == 10
        assert {it["item_id"] for it in body["items"]} <= set(servingdata.ITEMS)  # acme's, never globex's
        scores = [it["score"] for it in body["items"]]
        assert body["explore"] or scores == sorted(scores, reverse=True)
        assert all(it["author_id"] is not None for it in body["items"])  # from the ranker's catalog
        served.append(body)
    assert _recommend(url, tenant_id="initech").status_code == 404
    listed = client.recommend({**_body(), "request_id": "rec-client-200"})
    assert (listed.model_version, listed.retriever_version, len(listed.item_ids)) == (ranker.version, good.version, 10)
    assert client.recommend({**_body(), "tenant_id": "initech", "request_id": "rec-client-404"}) is None
    client.close()
    bad_limit = _recommend(url, limit=10_000)
    assert bad_limit.status_code == 422 and bad_limit.json()["detail"][0]["loc"] == ["body", "limit"]

    version = httpx.get(f"{url}/version").json()
    assert version["live"]["version"] == ranker.version and version["retriever"]["live"]["version"] == good.version

    records = [impression_lists.parse(r.value) for r in _consume(world.settings.kafka, world.topic, expect=5,
                                                                 timeout=30)]
    recommended = {r["request_id"]: r for r in records if r.get("request_id", "").startswith("rec")}
    assert {"rec0", "rec1", "rec2"} <= set(recommended) <= {"rec0", "rec1", "rec2", "rec-client-200"}
    for body in served:
        record = recommended[body["request_id"]]
        assert record["retriever_version"] == good.version and record["model_version"] == ranker.version
        assert record["items"] == [it["item_id"] for it in body["items"]]
        assert not impression_lists.problems(record)
        assert not any(events.check_event(e) for e in impression_lists.to_events(record))
    assert all("retriever_version" not in r for r in records if not r["request_id"].startswith("rec"))

    registry = retrieverdata.registry(world.store, world.bucket)
    registry.register(version=bad.version, files=bad.files, manifest=bad.manifest)
    world.store.put(world.bucket, registry.version_key(bad.version, "users.parquet"), b"not the registered bytes")
    registry.flip(version=bad.version, by="test", reason="test")
    deadline = time.monotonic() + 30
    while bad.version not in httpx.get(f"{url}/version").json()["retriever"]["refused"]:
        assert time.monotonic() < deadline, "the tampered retriever was not refused"
        time.sleep(0.2)
    refused = httpx.get(f"{url}/version").json()["retriever"]
    assert refused["live"]["version"] == good.version
    assert refused["refused"][bad.version].startswith("truncated")
    assert _recommend(url).headers["x-retriever-version"] == good.version
