"""Records that used to make decode_batch raise (a poison pill: the sink never passes that offset).

Each case is one record, decoded alone and mixed into a block with good records and a not-JSON one
(the mix forces the per-record path): it must be dead-lettered with a reason naming the field, and
the good records around it must land.
"""

from __future__ import annotations

import orjson
import pytest

from feedloop.contract import events as ev
from tests.unit.events.test_contract import GOOD

G = orjson.dumps(GOOD)

POISON = [
    pytest.param(orjson.dumps({**GOOD, "event_ts": "0001-01-01T00:00:00+01:00"}), "event_ts",
                 id="year-1-with-an-offset-overflows-astimezone"),
    pytest.param(orjson.dumps({**GOOD, "event_ts": "9999-12-31T23:59:59-01:00"}), "event_ts",
                 id="year-9999-with-an-offset-overflows-astimezone"),
    pytest.param(orjson.dumps({**GOOD, "event_ts": "1970-01-01T00:00:00Z"}), "event_ts", id="epoch-zero"),
    pytest.param(orjson.dumps({**GOOD, "event_ts": "2100-01-01T00:00:00Z"}), "event_ts", id="year-2100"),
    pytest.param(orjson.dumps({**GOOD, "position": 2**40}), "position", id="position-beyond-int32"),
    pytest.param(G.replace(b"5400", str(2**63).encode()), "dwell_ms", id="dwell-beyond-int64"),
    pytest.param(G.replace(b'"acme"', b'"ac\xffme"', 1).replace(b'"position":3', b'"position":0'), "<event>",
                 id="invalid-utf8-and-a-bad-field"),
    pytest.param(G.replace(b'"acme"', b'"ac\xffme"', 1), "<event>", id="invalid-utf8-in-a-string"),
    pytest.param(orjson.dumps({**GOOD, "schema_version": True}), "schema_version", id="schema-version-true"),
    pytest.param(orjson.dumps({**GOOD, "schema_version": 1.0}), "schema_version", id="schema-version-a-float"),
    pytest.param(b"null", "<event>", id="json-null-segfaults-arrow-first-in-a-block"),
    pytest.param(b"{}\r" + G, "<event>", id="carriage-return-between-two-objects"),
]


@pytest.mark.parametrize("raw, field", POISON)
@pytest.mark.parametrize("company", [
    pytest.param([], id="alone"),
    pytest.param([b"not json"], id="with-a-not-json-record"),
    pytest.param([orjson.dumps({**GOOD, "event_id": "good-2"})], id="with-a-good-record"),
])
def test_a_poison_record_is_dead_lettered_naming_the_field_and_the_rest_lands(raw, field, company):
    raws = [orjson.dumps({**GOOD, "event_id": "good-1"}), raw, *company]
    batch = ev.decode_batch(raws)
    rejected = {r.index: r.reason for r in batch.rejected}
    assert 1 in rejected and rejected[1].startswith(f"{field}: "), rejected
    assert 0 in batch.kept.to_pylist()
    assert sorted(batch.kept.to_pylist() + list(rejected)) == list(range(len(raws)))


@pytest.mark.parametrize("value", [
    pytest.param("0001-01-01T00:00:00+01:00", id="overflows-astimezone"),
    pytest.param("9999-12-31T23:59:59-01:00", id="overflows-the-other-way"),
    pytest.param("1999-12-31T23:59:59.999Z", id="before-2000"),
    pytest.param("2100-01-01T00:00:00Z", id="from-2100"),
    pytest.param("2000-01-01T00:30:00+01:00", id="before-2000-in-utc"),
])
def test_parse_ts_refuses_a_time_outside_the_sane_range_with_a_value_error(value):
    with pytest.raises(ev.TimestampError, match=r"between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z") as err:
        ev.parse_ts(value)
    assert isinstance(err.value, ValueError)  # callers (the /rank request) turn ValueErrors into a 4xx


@pytest.mark.parametrize("value, expected", [
    pytest.param("2000-01-01T00:00:00Z", "2000-01-01T00:00:00.000Z", id="first-instant"),
    pytest.param("2100-01-01T00:59:59.999+01:00", "2099-12-31T23:59:59.999Z", id="last-instant-with-an-offset"),
])
def test_parse_ts_accepts_the_edges_of_the_range(value, expected):
    assert ev.format_ts(ev.parse_ts(value)) == expected


def test_a_value_the_checks_let_through_but_arrow_refuses_is_rejected_and_the_rest_lands(monkeypatch):
    """The last guard: should check_event ever miss a rule Arrow enforces, that record, not its block, fails."""
    monkeypatch.setattr(ev, "check_event", lambda obj: [])  # a check that forgot every rule
    raws = [orjson.dumps({**GOOD, "event_id": "good-1"}), orjson.dumps({**GOOD, "position": "3"}), b"not json"]
    batch = ev.decode_batch(raws)
    assert batch.kept.to_pylist() == [0] and batch.table.column("event_id").to_pylist() == ["good-1"]
    assert [r.index for r in batch.rejected] == [1, 2]
    assert batch.rejected[0].reason.startswith("<event>: does not fit the event schema")


@pytest.mark.parametrize("first", [b"null", b" null", b""], ids=["null", "space-null", "empty-then-null"])
def test_a_block_starting_with_a_json_null_is_decoded_not_a_crash(first):
    """pyarrow 26 segfaults reading a block whose first value is a top-level null (apache/arrow#47409)."""
    raws = [first, b"null", G]
    batch = ev.decode_batch(raws)
    assert batch.kept.to_pylist() == [2]
    assert [r.index for r in batch.rejected] == [0, 1]
