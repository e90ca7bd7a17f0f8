"""The /recommend request parser, pure: /rank's fields and rules without candidates, and a required bounded limit."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from feedloop.core.config import ServingSettings
from feedloop.serving.rank_request import RequestError, RequestLimits
from feedloop.serving.recommend_request import RecommendRequest, parse

NOW_MS = int(datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
LIMITS = RequestLimits.from_settings(ServingSettings())
MAX = 500


def _body(**changes) -> bytes:
    body = {"tenant_id": "acme", "user_id": "u1", "surface": "feed", "device": "ios", "limit": 20}
    return orjson.dumps({k: v for k, v in {**body, **changes}.items() if v is not ...})


def _refused(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(body, limits=LIMITS, max_limit=MAX, now_ms=NOW_MS)
    return info.value


def _fields(exc: RequestError) -> list[str]:
    return [".".join(map(str, e["loc"][1:])) for e in exc.errors]


def test_a_good_request_is_parsed_with_its_optional_fields():
    req = parse(_body(request_id="r1", ts="2026-12-04T12:00:01.000Z", query=None), limits=LIMITS, max_limit=MAX,
                now_ms=NOW_MS)
    assert req == RecommendRequest(tenant_id="acme", user_id="u1", surface="feed", device="ios", query=None,
                                   request_id="r1", ts_ms=NOW_MS + 1000, limit=20)


@pytest.mark.parametrize("changes, field", [
    pytest.param({"limit": ...}, "limit", id="limit-is-required"),
    pytest.param({"limit": 0}, "limit", id="limit-below-one"),
    pytest.param({"limit": MAX + 1}, "limit", id="limit-above-recommend-candidates"),
    pytest.param({"limit": True}, "limit", id="limit-a-boolean"),
    pytest.param({"limit": "20"}, "limit", id="limit-a-string"),
    pytest.param({"tenant_id": ...}, "tenant_id", id="tenant-missing"),
    pytest.param({"user_id": ""}, "user_id", id="user-empty"),
    pytest.param({"user_id": "u" * 129}, "user_id", id="user-too-long"),
    pytest.param({"surface": "home"}, "surface", id="surface-not-allowed"),
    pytest.param({"device": None}, "device", id="device-missing"),
    pytest.param({"ts": "2026-12-05T12:00:00Z"}, "ts", id="ts-a-day-ahead-of-the-pod"),
    pytest.param({"candidates": [{"item_id": "i1"}]}, "candidates", id="candidates-belong-to-rank"),
])
def test_a_bad_field_is_a_422_naming_it(changes, field):
    exc = _refused(_body(**changes))
    assert exc.status == 422 and _fields(exc) == [field], exc.errors


def test_every_bad_field_is_named_at_once():
    exc = _refused(_body(tenant_id=1, surface="x", limit=-1))
    assert sorted(_fields(exc)) == ["limit", "surface", "tenant_id"]


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'"x"'], ids=["empty", "truncated", "list", "null", "str"])
def test_a_body_that_is_not_a_json_object_is_a_422(body):
    assert _refused(body).status == 422


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["tenant_id", "user_id", "surface", "device", "limit", "ts", "query",
                                        "request_id", "candidates"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=5),
                                 st.lists(st.integers(-9, 9), max_size=2))))
def test_no_input_raises_anything_but_a_request_error(obj):
    try:
        parse(orjson.dumps(obj), limits=LIMITS, max_limit=MAX, now_ms=NOW_MS)
    except RequestError as exc:
        assert exc.status == 422 and all(e["loc"][0] == "body" for e in exc.errors)
