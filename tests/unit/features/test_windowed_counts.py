"""WindowedCounts equals a plain Python sum over the daily rows: every row's counts as of its day over arrival days
[d - w, d), 0 for keys never counted (new, null, or only counted on other days), and the snapshot's keys and counts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

import pyarrow as pa
import pytest

from feedloop.features import definitions as features
from feedloop.features.windowed_counts import WindowedCounts

DAY0 = date(2031, 3, 1)
POOLS = {"user_id": ["u1", "u2", "ü3", "u4", "u1\x00"], "item_id": ["i1", "i2", "i3", "i4"],
         "author_id": ["a1", "a2", "a3", "a4"], "topic": ["t1", "t2", "t3", "t4"]}


def _daily(rng: random.Random) -> dict[str, list[dict]]:
    """Daily rows per entity over 40 days, each (key, day) once, as DuckDB's GROUP BY gives them. The last id of a
    pool is never counted; single-key entities count only the first two (their ids then have the lowest codes, and
    ids counted only in pairs, such as "ü3", must still read 0 there)."""
    tables = {}
    for e in features.ENTITIES:
        pools = [POOLS[k][:2] if len(e.keys) == 1 else POOLS[k][:-1] for k in e.keys]
        keys = {tuple(rng.choice(pool) for pool in pools) for _ in range(12)}
        rows = [{**dict(zip(e.keys, key)), "d": DAY0 + timedelta(days=d), **{c: rng.randint(0, 9) for c in e.counts}}
                for key in sorted(keys) for d in rng.sample(range(40), 15)]
        rng.shuffle(rows)
        tables[e.name] = rows
    return tables


def _oracle(rows: list[dict], e: features.Entity, key: tuple, day: date) -> dict[str, float]:
    out = {}
    for w in e.windows:
        for c in e.counts:
            out[features.count_column(e.name, c, w)] = float(sum(
                r[c] for r in rows if tuple(r[k] for k in e.keys) == key and day - timedelta(days=w) <= r["d"] < day))
    return out


@pytest.mark.parametrize("workers", [1, 2])   # the build reads two entities at once
def test_rows_and_snapshot_equal_a_python_sum(workers: int) -> None:
    rng = random.Random(5)
    daily = _daily(rng)
    tables = {name: pa.Table.from_pylist(rows) for name, rows in daily.items()}
    distinct = {k: pa.array(sorted({r[k] for e in features.ENTITIES if k in e.keys for r in daily[e.name]}))
                for k in POOLS}
    counts = WindowedCounts(distinct, {name: t.to_batches(max_chunksize=7) for name, t in tables.items()},
                            workers=workers)
    for day in (DAY0, DAY0 + timedelta(days=9), DAY0 + timedelta(days=30), DAY0 + timedelta(days=45)):
        as_of = counts.as_of(day)
        requests = [{k: rng.choice(POOLS[k] + [None]) for k in POOLS} for _ in range(60)]
        got = as_of.rows(counts.slots(pa.Table.from_pylist(requests)))
        for e in features.ENTITIES:
            for i, req in enumerate(requests):
                key = tuple(req[k] for k in e.keys)
                expected = _oracle(daily[e.name], e, key, day) if None not in key else \
                    {col: 0.0 for col in e.columns()}
                assert {col: got[col][i] for col in e.columns()} == expected, (e.name, key, day)
            snapshot = as_of.snapshot(e.name).to_pylist()
            longest = max(e.windows)
            keys = sorted({tuple(r[k] for k in e.keys) for r in daily[e.name]
                           if day - timedelta(days=longest) <= r["d"] < day})
            assert sorted(tuple(r[k] for k in e.keys) for r in snapshot) == keys
            for r in snapshot:
                assert {col: r[col] for col in e.columns()} == _oracle(daily[e.name], e, tuple(r[k] for k in e.keys), day)


def test_counts_of_an_empty_window_are_zero() -> None:
    empty = {e.name: [] for e in features.ENTITIES}
    distinct = {k: pa.array([], pa.string()) for k in POOLS}
    counts = WindowedCounts(distinct, empty)
    got = counts.as_of(DAY0).rows(counts.slots(pa.Table.from_pylist([{k: POOLS[k][0] for k in POOLS}])))
    assert set(got) == set(features.COUNT_COLUMNS) and all(v.tolist() == [0.0] for v in got.values())
    assert all(counts.as_of(DAY0).snapshot(e.name).num_rows == 0 for e in features.ENTITIES)


def test_counts_through_consecutive_days_equal_each_day_summed_afresh() -> None:
    daily = _daily(random.Random(9))
    distinct = {k: pa.array(sorted({r[k] for e in features.ENTITIES if k in e.keys for r in daily[e.name]}))
                for k in POOLS}
    counts = WindowedCounts(distinct, {name: pa.Table.from_pylist(rows).to_batches(max_chunksize=7)
                                       for name, rows in daily.items()})
    first = DAY0 - timedelta(days=3)  # from before the first entry to past the last one's longest window
    days = 0
    for day, running in zip((first + timedelta(days=i) for i in range(75)),
                            counts.through(first, first + timedelta(days=75))):
        assert running.day == day.toordinal()
        fresh = counts.as_of(day)
        for name, sums in fresh.sums.items():
            for column, expected in sums.items():
                assert running.sums[name][column].tolist() == expected.tolist(), (day, column)
        days += 1
    assert days == 75
