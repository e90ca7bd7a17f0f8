"""POST /rank against the real app (in-process, the session's S3 and Kafka, a registered ONNX model):
every bad input gets a 4xx naming its field and rule, never a 500, and nothing a caller sends can
stamp impressions into another hour or stop the impression log.

Why in-process (TestClient) and not a pod on a port: hypothesis sends hundreds of requests; the
app, its watcher and its impression log are the same objects a pod runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from feedloop.contract import events, impression_lists
from feedloop.promotion.registry import Registry
from feedloop.serving.app import create_app
from tests.support import servingdata
from tests.integration.test_impression_log import _read

pytestmark = pytest.mark.integration
FIELDS = {"tenant_id", "user_id", "surface", "device", "query", "request_id", "ts", "limit", "candidates"}
PROPERTY = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def version():
    return servingdata.make_version("2026-11-21-c0ffee", seed=1)


def _app(embedded, store, topic: str, v, tmp: str, **serving) -> TestClient:
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    registry = Registry(store, bucket)
    servingdata.register(registry, v)
    servingdata.flip(registry, v.version)
    settings = embedded.model_copy(update={
        "state_dir": Path(tmp), "s3": embedded.s3.model_copy(update={"models_bucket": bucket}),
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "serving": embedded.serving.model_copy(update={"poll_interval_s": 0.3, **serving})})
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(embedded, store, topic, version, tmp_path):
    with _app(embedded, store, topic, version, str(tmp_path)) as c:
        _wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def shared(embedded, version, tmp_path_factory):
    """One app for the property tests (hypothesis runs a test body many times within one fixture)."""
    from feedloop.core.storage import ObjectStore
    from feedloop.core.streams import ensure_topic

    topic = f"t-{uuid.uuid4().hex[:10]}"
    ensure_topic(embedded.kafka, topic=topic, partitions=1)
    with _app(embedded, ObjectStore.from_settings(embedded), topic, version, str(tmp_path_factory.mktemp("app"))) as c:
        _wait_ready(c)
        yield c


def _wait_ready(c: TestClient) -> None:
    deadline = time.monotonic() + 30
    while c.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, c.get("/readyz").text
        time.sleep(0.1)


def _body(**changes) -> dict:
    body = {"tenant_id": "acme", "user_id": "acme-u001", "surface": "search", "device": "web", "query": "cats",
            "candidates": [{"item_id": i, "author_id": "acme-a01"} for i in servingdata.ITEMS[:20]]}
    return {k: v for k, v in {**body, **changes}.items() if v is not ...}


def _fields(resp) -> list[str]:
    return [".".join(map(str, e["loc"][1:])) for e in resp.json()["detail"]]


def _now(delta: timedelta = timedelta()) -> str:
    return events.format_ts(datetime.now(timezone.utc) + delta)


# ---- ts: the impression's event time, bounded to the pod's clock --------------------------------------------

SKEW = "(serving.max_clock_skew_seconds)"  # a time, but too far from the pod's clock
RANGE = "is out of range: timestamps must be between"  # no time feedloop accepts at all


@pytest.mark.parametrize("ts, says", [
    pytest.param("2020-01-01T00:00:00.000Z", SKEW, id="years-ago"),
    pytest.param(-timedelta(hours=2), SKEW, id="two-hours-ago-past-any-hour"),
    pytest.param(timedelta(minutes=30), SKEW, id="half-an-hour-ahead"),
    pytest.param("2999-01-01T00:00:00.000Z", RANGE, id="far-future"),
    pytest.param("0001-01-01T00:00:00+01:00", RANGE, id="year-1-before-utc-overflows"),
    pytest.param("9999-12-31T23:59:59-01:00", RANGE, id="year-9999-after-utc-overflows"),
])
def test_a_ts_outside_the_clock_window_is_refused_with_422_naming_ts(client, ts, says):
    """Offsets from now are taken when the test runs: a whole CI session passes between collection and here."""
    resp = client.post("/rank", json=_body(ts=_now(ts) if isinstance(ts, timedelta) else ts))
    assert resp.status_code == 422, resp.text
    assert _fields(resp) == ["ts"]
    assert says in resp.json()["detail"][0]["msg"], resp.text


def test_a_ts_within_the_window_dates_the_impressions_but_kafka_gets_the_pods_own_clock(client, embedded, topic):
    ts = datetime.now(timezone.utc) - timedelta(seconds=90)
    before = int(time.time() * 1000)
    resp = client.post("/rank", json=_body(ts=events.format_ts(ts), request_id="skewed", limit=5))
    after = int(time.time() * 1000)
    assert resp.status_code == 200, resp.text
    records = _read(embedded, topic, expect=1)
    assert len(records) == 1  # the list's record
    assert {e["event_ts"] for e in impression_lists.events_in(records[0].value)} == {events.format_ts(ts)}
    assert all(before <= r.timestamp <= after + 1000 for r in records), [r.timestamp for r in records]


def test_in_a_simulation_any_ts_is_the_time_and_stamps_the_kafka_record(embedded, store, topic, version, tmp_path):
    """make demo and the closed-loop tests replay past days through pods: their clock is the simulated one."""
    with _app(embedded, store, topic, version, str(tmp_path), simulated_time=True) as c:
        _wait_ready(c)
        resp = c.post("/rank", json=_body(ts="2026-11-01T10:00:00.000Z", limit=3))
        assert resp.status_code == 200, resp.text
        records = _read(embedded, topic, expect=1)
    assert {r.timestamp for r in records} == {int(events.parse_ts("2026-11-01T10:00:00.000Z").timestamp() * 1000)}


# ---- every string is bounded, and so is the body ------------------------------------------------------------

@pytest.mark.parametrize("changes, field, setting", [
    pytest.param({"query": "q" * 1_000_000}, "query", "serving.max_query_chars", id="a-1MB-query-under-the-body-limit"),
    pytest.param({"query": "q" * 513}, "query", "serving.max_query_chars", id="query-one-over"),
    pytest.param({"tenant_id": "t" * 129}, "tenant_id", "serving.max_id_chars", id="tenant"),
    pytest.param({"user_id": "u" * 129}, "user_id", "serving.max_id_chars", id="user"),
    pytest.param({"request_id": "r" * 129}, "request_id", "serving.max_id_chars", id="request-id"),
    pytest.param({"candidates": [{"item_id": "i" * 129}]}, "candidates.0.item_id", "serving.max_id_chars",
                 id="item-id"),
    pytest.param({"candidates": [{"item_id": "i", "author_id": "a" * 129}]}, "candidates.0.author_id",
                 "serving.max_id_chars", id="author-id"),
    pytest.param({"surface": "s" * 500_000}, "surface", "expected one of", id="a-huge-enum-value-is-not-echoed"),
])
def test_every_string_field_is_bounded_with_a_422_naming_the_field_and_the_limit(client, changes, field, setting):
    resp = client.post("/rank", json=_body(**changes))
    assert resp.status_code == 422, resp.text[:500]
    assert _fields(resp) == [field]
    assert setting in resp.text
    assert len(resp.content) < 2000  # the error names the value, it does not echo a megabyte of it


def test_a_body_over_the_limit_is_refused_with_413_even_without_a_content_length(client):
    def chunks():
        yield b'{"query": "'
        for _ in range(300):
            yield b"x" * 4096
    resp = client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "serving.max_body_bytes" in resp.text


def test_after_a_refused_huge_request_the_impressions_of_the_next_ones_still_reach_kafka(client, embedded, topic):
    """The reproduced bug: one ~1 MB query killed the logging thread and every later impression was lost."""
    assert client.post("/rank", json=_body(query="q" * 1_000_000)).status_code == 422
    for i in range(3):
        assert client.post("/rank", json=_body(request_id=f"next-{i}", limit=4)).status_code == 200
    records = _read(embedded, topic, expect=3)
    assert sorted({e["request_id"] for r in records for e in impression_lists.events_in(r.value)}) == [
        "next-0", "next-1", "next-2"]


# ---- keep it so: any input is a 200 or a 4xx naming a field, never a 500 ---------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(),
                     st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
_ts = st.one_of(st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30T00:00:00Z"]),
                st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                st.datetimes(timezones=st.just(timezone.utc)).map(events.format_ts),
                st.just(_now()), _json)
_ids = st.one_of(st.sampled_from(servingdata.ITEMS), st.text(min_size=0, max_size=140), _json)
_candidate = st.one_of(st.fixed_dictionaries({"item_id": _ids}, optional={"author_id": _ids}), _json)
_request = st.fixed_dictionaries({}, optional={
    "tenant_id": st.one_of(st.just("acme"), _ids), "user_id": st.one_of(st.sampled_from(servingdata.USERS), _ids),
    "surface": st.one_of(st.sampled_from(["feed", "search", "related", "notifications"]), _json),
    "device": st.one_of(st.sampled_from(["ios", "android", "web"]), _json),
    "query": st.one_of(st.text(max_size=600), _json), "request_id": _ids, "ts": _ts,
    "limit": st.one_of(st.integers(min_value=-3, max_value=30), _json),
    "candidates": st.one_of(st.lists(_candidate, min_size=0, max_size=30), _json),
    "extra": _json})


def _check(resp) -> None:
    assert resp.status_code == 200 or 400 <= resp.status_code < 500 and resp.status_code != 503, resp.text[:500]
    if resp.status_code in (413, 422):
        detail = resp.json()["detail"]
        assert detail and all(e["loc"][0] == "body" and e["msg"] for e in detail)
        named = {str(e["loc"][1]) for e in detail if len(e["loc"]) > 1}
        assert named <= FIELDS, named
        assert named or resp.json()["detail"][0]["type"] in ("json_invalid", "object_type", "too_large")


@PROPERTY
@given(body=_request)
def test_any_json_request_gets_200_or_a_4xx_naming_its_field(shared, body):
    _check(shared.post("/rank", content=json.dumps(body).encode()))  # json: big integers, NaN


@PROPERTY
@given(raw=st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                    st.builds(lambda f, d: b'{"%s": %s%s}' % (f.encode(), b"[" * d, b"]" * d),
                              st.sampled_from(sorted(FIELDS)), st.integers(min_value=990, max_value=1030))))
def test_any_bytes_get_a_4xx_naming_the_body_never_a_500(shared, raw):
    _check(shared.post("/rank", content=raw))
