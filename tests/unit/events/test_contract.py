from __future__ import annotations

import orjson
import pytest

from feedloop.contract import events as ev

GOOD = {
    "event_id": "e-1",
    "event_ts": "2026-11-20T03:04:05.123Z",
    "tenant_id": "acme",
    "user_id": "acme-u1",
    "item_id": "acme-i1",
    "author_id": "acme-a1",
    "request_id": "req-1",
    "surface": "search",
    "position": 3,
    "event_type": "dwell",
    "dwell_ms": 5400,
    "device": "android",
    "query": "shoes",
    "schema_version": 1,
    "explore": False,
    "model_version": "2026-11-20-0123456789",
}


def _with(**changes):
    event = {**GOOD, **changes}
    return {k: v for k, v in event.items() if v is not _MISSING}


_MISSING = object()

BAD = [
    pytest.param(_with(event_id=_MISSING), "event_id", "missing", id="event-id-missing"),
    pytest.param(_with(event_id=""), "event_id", "non-empty string", id="event-id-empty"),
    pytest.param(_with(user_id=42), "user_id", "non-empty string", id="user-id-not-a-string"),
    pytest.param(_with(tenant_id=None), "tenant_id", "missing", id="tenant-id-null"),
    pytest.param(_with(item_id=_MISSING), "item_id", "missing", id="item-id-missing"),
    pytest.param(_with(author_id=_MISSING), "author_id", "missing", id="author-id-missing"),
    pytest.param(_with(request_id=["r"]), "request_id", "non-empty string", id="request-id-a-list"),
    pytest.param(_with(event_ts=_MISSING), "event_ts", "missing", id="event-ts-missing"),
    pytest.param(_with(event_ts="yesterday"), "event_ts", "ISO-8601", id="event-ts-not-iso"),
    pytest.param(_with(event_ts="2026-11-20T03:04:05.123"), "event_ts", "timezone", id="event-ts-no-timezone"),
    pytest.param(_with(event_ts="2026-13-20T03:04:05.123Z"), "event_ts", "valid date", id="event-ts-impossible-date"),
    pytest.param(_with(event_ts=1732071845), "event_ts", "ISO-8601", id="event-ts-epoch-number"),
    pytest.param(_with(surface="home"), "surface", "expected one of feed", id="surface-unknown"),
    pytest.param(_with(event_type="purchase"), "event_type", "expected one of impression", id="event-type-unknown"),
    pytest.param(_with(event_type=_MISSING), "event_type", "missing", id="event-type-missing"),
    pytest.param(_with(device="tv"), "device", "expected one of ios", id="device-unknown"),
    pytest.param(_with(position=0), "position", ">= 1", id="position-zero"),
    pytest.param(_with(position="3"), "position", ">= 1", id="position-a-string"),
    pytest.param(_with(position=2.5), "position", ">= 1", id="position-a-float"),
    pytest.param(_with(position=True), "position", ">= 1", id="position-a-bool"),
    pytest.param(_with(dwell_ms=-1), "dwell_ms", ">= 0", id="dwell-negative"),
    pytest.param(_with(dwell_ms=None), "dwell_ms", "required for event_type 'dwell'", id="dwell-missing-on-dwell"),
    pytest.param(_with(query=7), "query", "string or null", id="query-not-a-string"),
    pytest.param(_with(schema_version=2), "schema_version", "expected 1", id="schema-version-unknown"),
    pytest.param(_with(explore="yes"), "explore", "true, false or null", id="explore-not-a-bool"),
    pytest.param(_with(model_version=""), "model_version", "non-empty string or null", id="model-version-empty"),
    pytest.param(_with(model_version=3), "model_version", "non-empty string or null", id="model-version-not-a-string"),
]


def test_good_event_parses_to_every_field():
    parsed = ev.parse_event(orjson.dumps(GOOD))
    assert parsed == GOOD
    assert tuple(parsed) == ev.FIELDS


@pytest.mark.parametrize("event, field, problem", BAD)
def test_bad_field_is_named_with_the_problem(event, field, problem):
    with pytest.raises(ev.EventError) as err:
        ev.parse_event(orjson.dumps(event))
    assert [e.field for e in err.value.errors] == [field]
    assert problem in str(err.value)
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize("event, field, problem", BAD)
def test_batch_rejects_exactly_the_bad_record_with_the_same_reason(event, field, problem):
    raws = [orjson.dumps({**GOOD, "event_id": "a"}), orjson.dumps(event), orjson.dumps({**GOOD, "event_id": "b"})]
    batch = ev.decode_batch(raws)
    assert batch.table.column("event_id").to_pylist() == ["a", "b"]
    assert batch.kept.to_pylist() == [0, 2]
    assert len(batch.rejected) == 1 and batch.rejected[0].index == 1
    assert batch.rejected[0].reason.startswith(f"{field}: ") and problem in batch.rejected[0].reason


@pytest.mark.parametrize(
    "raw, problem",
    [
        pytest.param(b"not json", "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "expected a JSON object", id="json-array"),
        pytest.param(b"", "not valid JSON", id="empty-bytes"),
        pytest.param(b'{"event_id": "x",\n "position": 1}', "missing", id="multi-line-and-incomplete"),
    ],
)
def test_unreadable_records_are_rejected_not_raised(raw, problem):
    batch = ev.decode_batch([orjson.dumps(GOOD), raw])
    assert batch.table.num_rows == 1
    assert batch.rejected[0].index == 1 and problem in batch.rejected[0].reason


def test_several_errors_are_all_reported():
    with pytest.raises(ev.EventError) as err:
        ev.parse_event(orjson.dumps(_with(surface="x", position=-2, device=_MISSING)))
    assert {e.field for e in err.value.errors} == {"surface", "position", "device"}


def test_batch_table_has_the_contract_schema_and_utc_timestamps():
    offset = {**GOOD, "event_ts": "2026-11-20T05:04:05.123+02:00", "event_type": "click", "dwell_ms": None}
    batch = ev.decode_batch([orjson.dumps(GOOD), orjson.dumps(offset)])
    assert batch.table.schema == ev.ARROW_SCHEMA
    stamps = batch.table.column("event_ts").to_pylist()
    assert stamps[0] == stamps[1]
    assert ev.format_ts(stamps[0]) == "2026-11-20T03:04:05.123Z"


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    batch = ev.decode_batch([orjson.dumps({**GOOD, "experiment": "x1"})])
    assert batch.table.num_rows == 1 and not batch.rejected


def test_events_to_table_round_trips_through_the_wire_format():
    table = ev.events_to_table([GOOD])
    row = table.to_pylist()[0]
    assert ev.format_ts(row["event_ts"]) == GOOD["event_ts"]
    assert {k: v for k, v in row.items() if k != "event_ts"} == {k: v for k, v in GOOD.items() if k != "event_ts"}
