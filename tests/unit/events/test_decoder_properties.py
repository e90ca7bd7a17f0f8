"""Property tests of the event decoder: whatever a producer sends, decode_batch never raises and loses nothing.

Blocks mix valid events with junk: any bytes, non-UTF-8, empty records, pretty-printed JSON, good events
with one field replaced by a nasty value (huge numbers, NaN and Infinity tokens, nested junk, timestamps
from year 1 to 9999 with any offset). For every block:
- every input record either lands (in `kept`) or is dead-lettered (in `rejected`) with a reason naming a
  field, never both, never neither: landed + dead-lettered == input, by record index;
- each record's fate is the one it has alone (`parse_event`), whichever path (vectorized or per record)
  its block took: a record's neighbours never change whether it lands, its row or its reason.
"""

from __future__ import annotations

import orjson
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedloop.contract import events as ev
from tests.unit.events.test_contract import GOOD

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies ----------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)

offsets = st.one_of(st.just("Z"), st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
                                            st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)))
timestamps = st.one_of(
    st.builds(lambda y, mo, d, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
              st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
              st.integers(0, 61), st.integers(0, 61), st.sampled_from(["", ".1", ".123", ".123456789"]), offsets),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1999-12-31T23:59:59.999Z",
                     "2100-01-01T00:00:00Z", "2026-11-20T03:04:05.123Z\n", "２０２６-11-20T03:04:05Z"]),
    json_values,
)
# raw JSON tokens orjson.dumps cannot produce
raw_tokens = st.sampled_from([b"NaN", b"-Infinity", b"1e400", b"-0", b"1.0", b"99999999999999999999999999",
                              str(2**63).encode(), str(2**64).encode(), b'"\\ud800"', b'"\xff"', b"{}", b"[]"])


@st.composite
def valid_events(draw) -> bytes:
    n = draw(st.integers(0, 10**6))
    ts = draw(st.datetimes(min_value=ev.TS_MIN.replace(tzinfo=None), max_value=ev.TS_MAX.replace(tzinfo=None),
                           timezones=st.just(ev.TS_MIN.tzinfo)))
    if ts >= ev.TS_MAX:
        ts = ev.TS_MIN
    return orjson.dumps({**GOOD, "event_id": f"e-{n}", "event_ts": ev.format_ts(ts)})


@st.composite
def mutated_events(draw) -> bytes:
    """A good event with one field changed, dropped, duplicated or replaced by a raw token."""
    name = draw(st.sampled_from([*ev.FIELDS, "extra"]))
    how = draw(st.sampled_from(["value", "timestamp", "drop", "token", "duplicate"]))
    event = {**GOOD, "event_id": f"m-{draw(st.integers(0, 10**6))}"}
    if how == "drop":
        event.pop(name, None)
        return orjson.dumps(event)
    if how in ("token", "duplicate"):
        event[name] = "@@TOKEN@@"
        token = draw(raw_tokens) if how == "token" else orjson.dumps(draw(json_scalars))
        raw = orjson.dumps(event).replace(b'"@@TOKEN@@"', token)
        return raw[:-1] + b',"' + name.encode() + b'":' + token + b"}" if how == "duplicate" else raw
    event[name] = draw(timestamps if how == "timestamp" else json_values)
    return orjson.dumps(event)


junk = st.one_of(
    st.binary(max_size=120),
    st.just(b""),
    st.text(max_size=60).map(str.encode),
    st.builds(lambda v: orjson.dumps(v), json_values),
    valid_events().map(lambda raw: orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2)),
    st.builds(lambda raw, i, b: raw[:i] + b + raw[i:], valid_events(), st.integers(0, 400), st.binary(min_size=1,
                                                                                                        max_size=3)),
)
records = st.one_of(valid_events(), mutated_events(), junk)
# mostly-good blocks reach the vectorized path; junk-heavy ones the per-record path
blocks = st.one_of(st.lists(records, max_size=25), st.lists(st.one_of(valid_events(), valid_events(), records),
                                                            min_size=1, max_size=25))


# ---- properties ----------------------------------------------------------------------------------

def alone(raw: bytes) -> tuple[str, object]:
    """The fate of one record by itself: its row, or why it is refused."""
    try:
        return "landed", ev.events_to_table([ev.parse_event(raw)]).to_pylist()[0]
    except ev.EventError as exc:
        return "rejected", str(exc)


@PROPERTY
@given(raws=blocks)
def test_decode_batch_never_raises_and_every_record_lands_or_is_dead_lettered_with_a_reason(raws):
    batch = ev.decode_batch(raws)

    kept = batch.kept.to_pylist()
    dead = [r.index for r in batch.rejected]
    assert sorted(kept + dead) == list(range(len(raws))), "a record was lost or counted twice"
    assert batch.table.schema == ev.ARROW_SCHEMA and batch.table.num_rows == len(kept)
    for r in batch.rejected:
        field, _, problem = r.reason.partition(": ")
        assert field in (*ev.FIELDS, "<event>") and problem, r.reason
    if kept:
        low, high = (v.as_py() for v in pc.min_max(batch.table["event_ts"]).values())
        assert ev.TS_MIN <= low and high < ev.TS_MAX


@PROPERTY
@given(raws=blocks)
def test_a_record_has_the_same_fate_in_any_block_as_alone(raws):
    batch = ev.decode_batch(raws)
    rows = dict(zip(batch.kept.to_pylist(), batch.table.to_pylist()))
    reasons = {r.index: r.reason for r in batch.rejected}
    for i, raw in enumerate(raws):
        got = ("landed", rows[i]) if i in rows else ("rejected", reasons[i])
        assert got == alone(raw), raw


@PROPERTY
@given(raws=st.lists(valid_events(), min_size=1, max_size=25), at=st.data(), poison=records)
def test_one_poison_record_never_costs_the_valid_records_around_it(raws, at, poison):
    i = at.draw(st.integers(0, len(raws)))
    block = [*raws[:i], poison, *raws[i:]]
    batch = ev.decode_batch(block)
    landed = set(batch.kept.to_pylist())
    assert set(range(len(block))) - {i} <= landed


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_the_reproduced_poison_pill_is_dead_lettered_beside_a_not_json_record(value):
    batch = ev.decode_batch([orjson.dumps({**GOOD, "event_ts": value}), b"not json", orjson.dumps(GOOD)])
    assert batch.kept.to_pylist() == [2]
    reasons = {r.index: r.reason for r in batch.rejected}
    assert reasons[0].startswith("event_ts: ") and "out of range" in reasons[0]
    assert reasons[1].startswith("<event>: not valid JSON")


@PROPERTY
@given(value=timestamps)
def test_parse_ts_returns_a_utc_time_in_range_or_raises_a_value_error(value):
    try:
        ts = ev.parse_ts(value)
    except ev.TimestampError as exc:
        assert str(exc)
    else:
        assert ev.TS_MIN <= ts < ev.TS_MAX and ts.utcoffset().total_seconds() == 0
