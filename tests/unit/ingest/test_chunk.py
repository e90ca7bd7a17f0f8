"""One chunk's objects: one per event hour, named by the chunk's first offset, deduplicated, late events dead-lettered.

A chunk's objects must be a function of its offsets alone: the same records, however they were
fetched (one batch or many), give the same keys and the same rows, so a retry rewrites, never adds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.core.config import load_settings
from feedloop.ingest.chunk import Chunk, Limits
from feedloop.ingest.partition import limits
from tests.support.kafka_helpers import event

LIMITS = Limits(max_lateness=timedelta(hours=48), max_skew=timedelta(minutes=10))
T0 = datetime(2026, 11, 20, 9, 59, 58, tzinfo=timezone.utc)
ALLOWED = "allowed: 48 h before to 10 min after arrival (ingest.max_lateness_hours / ingest.max_skew_minutes)"
HOUR_09 = "events/engagement/dt=2026-11-20/hour=09/"
HOUR_10 = "events/engagement/dt=2026-11-20/hour=10/"


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _record(i: int, ts: datetime, arrival: datetime | None = None) -> tuple[int, bytes]:
    """(record timestamp, value) of event number `i` at `ts`, arriving 2 s later unless told."""
    return _ms(arrival or ts + timedelta(seconds=2)), orjson.dumps(event(i, ts))


def _add(chunk: Chunk, first_offset: int, records: list[tuple[int, bytes]]) -> None:
    chunk.add(list(range(first_offset, first_offset + len(records))), [r[0] for r in records],
              [r[1] for r in records])


def _contents(objects: dict) -> dict[str, list[tuple[int, str]]]:
    """key -> [(offset, event_id)] (dead letters: [(offset, reason)]) in stored order."""
    return {key: list(zip(table["kafka_offset"].to_pylist(),
                          table["reason" if "reason" in table.column_names else "event_id"].to_pylist()))
            for key, table in objects.items()}


def test_a_new_chunk_spans_start_to_start_plus_size_and_is_clean():
    chunk = Chunk("engagement", 4, 2_000, 1_000, LIMITS)

    assert (chunk.start, chunk.end, chunk.next_offset, chunk.dirty) == (2_000, 3_000, 2_000, False)
    assert chunk.events_objects() == {} and chunk.deadletter_objects() == {}


def test_a_chunk_reopened_below_the_checkpoint_keeps_the_next_offset_it_was_given():
    assert Chunk("engagement", 0, 2_000, 1_000, LIMITS, next_offset=2_345).next_offset == 2_345


def test_adding_records_moves_next_offset_past_the_last_one_and_marks_the_chunk_dirty():
    chunk = Chunk("engagement", 0, 100, 100, LIMITS)
    _add(chunk, 137, [_record(1, T0), _record(2, T0)])

    assert (chunk.next_offset, chunk.dirty) == (139, True)


def test_adding_nothing_changes_nothing():
    chunk = Chunk("engagement", 0, 100, 100, LIMITS)
    chunk.add([], [], [])

    assert (chunk.next_offset, chunk.dirty, chunk.rows) == (100, False, [])


def test_rows_go_to_one_object_per_event_hour_named_by_the_chunk_start_not_the_first_offset():
    chunk = Chunk("engagement", 3, 1_000, 100, LIMITS)
    _add(chunk, 1_017, [_record(1, T0), _record(2, T0 + timedelta(seconds=3)), _record(3, T0 + timedelta(seconds=1)),
                        _record(4, T0 - timedelta(minutes=30))])

    assert _contents(chunk.events_objects()) == {
        HOUR_09 + "engagement+3+00000000000000001000.parquet": [(1_017, "ev-0000001"), (1_019, "ev-0000003"),
                                                                (1_020, "ev-0000004")],
        HOUR_10 + "engagement+3+00000000000000001000.parquet": [(1_018, "ev-0000002")],
    }


@pytest.mark.parametrize("generation,name", [
    pytest.param(0, "engagement+0+00000000000000000200.parquet", id="first-log-has-no-suffix"),
    pytest.param(1, "engagement+0+00000000000000000200.g1.parquet", id="after-one-reset"),
    pytest.param(12, "engagement+0+00000000000000000200.g12.parquet", id="after-twelve-resets"),
])
def test_the_log_generation_is_part_of_every_object_name(generation, name):
    chunk = Chunk("engagement", 0, 200, 100, LIMITS, generation=generation)
    _add(chunk, 200, [_record(1, T0), (_ms(T0), b"not json")])

    assert list(chunk.events_objects()) == [HOUR_09 + name]
    assert list(chunk.deadletter_objects()) == ["deadletter/engagement/dt=2026-11-20/" + name]


def test_a_repeated_event_id_keeps_its_lowest_offset_across_batches_and_hours():
    chunk = Chunk("engagement", 0, 0, 100, LIMITS)
    _add(chunk, 0, [_record(1, T0), _record(2, T0)])
    # ev-1 again, sent again a few seconds later with a timestamp in the next hour: a producer retry, not a new event
    _add(chunk, 2, [_record(1, T0 + timedelta(seconds=5)), _record(3, T0 + timedelta(seconds=5)), _record(2, T0)])

    assert _contents(chunk.events_objects()) == {
        HOUR_09 + "engagement+0+00000000000000000000.parquet": [(0, "ev-0000001"), (1, "ev-0000002")],
        HOUR_10 + "engagement+0+00000000000000000000.parquet": [(3, "ev-0000003")],
    }


def test_an_hour_holding_only_repeats_gets_no_object():
    chunk = Chunk("engagement", 0, 0, 100, LIMITS)
    _add(chunk, 0, [_record(1, T0), _record(1, T0 + timedelta(seconds=5))])

    assert list(chunk.events_objects()) == [HOUR_09 + "engagement+0+00000000000000000000.parquet"]


ARRIVAL = datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=timezone.utc)


@pytest.mark.parametrize("event_ts,reason", [
    pytest.param(ARRIVAL - timedelta(hours=48), None, id="exactly-max-lateness-before-lands"),
    pytest.param(ARRIVAL - timedelta(hours=48, milliseconds=1),
                 f"event_ts: 2026-11-18T12:00:00.499Z is 48.0 h before its arrival at 2026-11-20T12:00:00.500Z; "
                 f"{ALLOWED}", id="one-ms-later-than-max-lateness-is-dead"),
    pytest.param(ARRIVAL + timedelta(minutes=10), None, id="exactly-max-skew-after-lands"),
    pytest.param(ARRIVAL + timedelta(minutes=10, milliseconds=1),
                 f"event_ts: 2026-11-20T12:10:00.501Z is 10.0 min after its arrival at 2026-11-20T12:00:00.500Z; "
                 f"{ALLOWED}", id="one-ms-beyond-max-skew-is-dead"),
])
def test_the_lateness_window_is_inclusive_and_an_event_outside_it_is_dead_lettered_saying_why(event_ts, reason):
    chunk = Chunk("engagement", 0, 0, 100, LIMITS)
    _add(chunk, 7, [_record(1, event_ts, arrival=ARRIVAL)])

    landed = [row for table in chunk.events_objects().values() for row in table["kafka_offset"].to_pylist()]
    dead = [row for rows in _contents(chunk.deadletter_objects()).values() for row in rows]
    assert (landed, dead) == (([7], []) if reason is None else ([], [(7, reason)]))


def test_dead_letters_are_filed_under_their_arrival_day_in_offset_order():
    chunk = Chunk("engagement", 1, 500, 100, LIMITS)
    before_midnight = datetime(2026, 11, 20, 23, 59, 59, 999_000, tzinfo=timezone.utc)
    after_midnight = before_midnight + timedelta(milliseconds=1)
    _add(chunk, 510, [
        (_ms(after_midnight), b"not json"),
        (_ms(before_midnight), b"{}"),
        _record(1, before_midnight - timedelta(days=5), arrival=before_midnight),  # event day 11-15, arrival 11-20
        _record(2, before_midnight, arrival=after_midnight),                       # lands, in hour 23 of 11-20
    ])

    dead = {key: [offset for offset, _ in rows] for key, rows in _contents(chunk.deadletter_objects()).items()}
    assert dead == {
        "deadletter/engagement/dt=2026-11-20/engagement+1+00000000000000000500.parquet": [511, 512],
        "deadletter/engagement/dt=2026-11-21/engagement+1+00000000000000000500.parquet": [510],
    }
    assert _contents(chunk.events_objects()) == {
        "events/engagement/dt=2026-11-20/hour=23/engagement+1+00000000000000000500.parquet": [(513, "ev-0000002")]}


def test_the_sink_limits_are_the_configured_hours_and_minutes():
    cfg = load_settings(environ={}).ingest.model_copy(update={"max_lateness_hours": 36, "max_skew_minutes": 7})

    assert limits(cfg) == Limits(max_lateness=timedelta(hours=36), max_skew=timedelta(minutes=7))


# A log of one chunk: event i (ids repeat: producer retries), a timestamp some hours after T0, or
# "bad" (not JSON) or "late" (three days before its arrival): both dead letters.
RECORDS = st.lists(st.one_of(
    st.tuples(st.just("event"), st.integers(0, 15), st.integers(0, 5 * 3600)),
    st.tuples(st.just("bad"), st.just(0), st.integers(0, 5 * 3600)),
    st.tuples(st.just("late"), st.integers(0, 15), st.integers(0, 5 * 3600)),
), max_size=40)
START = datetime(2026, 11, 20, 21, 30, tzinfo=timezone.utc)  # five hours from here cross midnight


def _log(records) -> list[tuple[int, bytes]]:
    out = []
    for kind, i, seconds in records:
        arrival = START + timedelta(seconds=seconds, milliseconds=1)
        if kind == "bad":
            out.append((_ms(arrival), b"not json"))
        else:
            out.append(_record(i, arrival - (timedelta(days=3) if kind == "late" else timedelta(seconds=2)), arrival))
    return out


@settings(max_examples=60, deadline=None)
@given(records=RECORDS, cuts=st.lists(st.integers(0, 40), max_size=5))
def test_every_offset_lands_once_or_is_dead_lettered_or_repeats_an_earlier_event_however_it_was_fetched(records,
                                                                                                      cuts):
    log = _log(records)
    whole, pieces = Chunk("engagement", 0, 0, 64, LIMITS), Chunk("engagement", 0, 0, 64, LIMITS)
    _add(whole, 0, log)
    bounds = sorted({0, len(log), *(c for c in cuts if c < len(log))})
    for lo, hi in zip(bounds, bounds[1:]):
        _add(pieces, lo, log[lo:hi])

    events, dead = whole.events_objects(), whole.deadletter_objects()
    for got, want in ((pieces.events_objects(), events), (pieces.deadletter_objects(), dead)):
        assert got.keys() == want.keys() and all(got[k].equals(want[k]) for k in want)

    first_seen: dict[int, int] = {}
    for offset, (kind, i, _) in enumerate(records):
        if kind == "event":
            first_seen.setdefault(i, offset)
    landed = {offset: key for key, table in events.items() for offset in table["kafka_offset"].to_pylist()}
    assert sorted(landed) == sorted(first_seen.values())
    assert sorted(o for t in dead.values() for o in t["kafka_offset"].to_pylist()) == \
        [o for o, (kind, _, _) in enumerate(records) if kind != "event"]
    for key, table in events.items():  # each row in the object of its own event hour, in offset order
        offsets = table["kafka_offset"].to_pylist()
        assert offsets == sorted(offsets)
        for ts in table["event_ts"].to_pylist():
            assert key.startswith(f"events/engagement/dt={ts:%Y-%m-%d}/hour={ts:%H}/")


def _list_record(request_id: str, ts: datetime, items: int, arrival: datetime | None = None) -> tuple[int, bytes]:
    from feedloop.contract import impression_lists
    from feedloop.contract.events import format_ts

    return _ms(arrival or ts + timedelta(seconds=2)), impression_lists.encode(
        request_id=request_id, event_ts=format_ts(ts), tenant_id="acme", user_id="acme-u1", surface="feed",
        device="web", query=None, explore=False, model_version="2026-11-19-ab12",
        item_ids=[f"acme-i{i}" for i in range(items)], author_ids=["acme-a1"] * items)


def test_a_list_record_lands_as_its_impressions_at_its_offset_and_a_late_one_is_dead_lettered_once():
    """A pod's list record between plain events: its rows carry its one offset, in display order; the same list
    arriving too late is one dead letter (its raw record), not one per item."""
    chunk = Chunk("engagement", 0, 0, 1_000, LIMITS)
    late = T0 - timedelta(hours=49)
    _add(chunk, 0, [_record(0, T0), _list_record("r1", T0, 3), _record(2, T0), _list_record("r2", late, 4, T0)])

    (key, rows), = _contents(chunk.events_objects()).items()
    assert key.startswith(HOUR_09) and rows == [
        (0, "ev-0000000"), (1, "r1-p001-impression"), (1, "r1-p002-impression"), (1, "r1-p003-impression"),
        (2, "ev-0000002")]
    dead = list(chunk.deadletter_objects().values())
    assert [t.num_rows for t in dead] == [1] and dead[0]["kafka_offset"].to_pylist() == [3]
    assert "before its arrival" in dead[0]["reason"][0].as_py() and dead[0]["raw"][0].as_py().startswith(b'{"record')
