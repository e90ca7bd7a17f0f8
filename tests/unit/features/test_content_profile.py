"""The content profile on hand-built events (point in time by arrival, decay weights, K most recent) and the
similarities both the training set and the pods compute with."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from feedloop.features import content_profile as cp
from feedloop.features import definitions as features

D = date(2031, 3, 10)                      # the impression day the profile is "as of"
START = datetime(2031, 3, 10, tzinfo=timezone.utc)
DAY = 86_400.0
ITEMS = [f"i{k}" for k in range(8)]
EMB = np.vstack([np.eye(8, dtype=np.float32), np.full((1, 8), np.nan, np.float32)])   # item k = unit vector k


def _profiles(events: list[tuple[str, str, str, datetime]], *, days=(D,), as_of=D + timedelta(days=1)):
    """(Profiles, {(user, day): profile row}) from (user, item, event_type, arrival) events."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("items", pa.table({"item_id": ITEMS, "item_row": list(range(len(ITEMS)))}))
    con.execute("CREATE TABLE citem AS SELECT * FROM items")
    con.execute("CREATE TABLE ev (user_id VARCHAR, item_id VARCHAR, event_type VARCHAR, ingest_ts TIMESTAMPTZ)")
    con.executemany("INSERT INTO ev VALUES (?, ?, ?, ?)", events)
    con.execute("CREATE TABLE imp (user_id VARCHAR, d DATE)")
    con.executemany("INSERT INTO imp VALUES (?, ?)", [(u, d) for u in {e[0] for e in events} for d in days])
    cp.stage_positives(con, datetime.combine(as_of, datetime.min.time(), tzinfo=timezone.utc))
    table = cp.profiles(con, EMB, as_of)
    rows = {(u, d): r for u, d, r in con.execute("SELECT user_id, d, pair_row FROM cpair").fetchall()}
    return table, rows


def _at(days_before_d: float) -> datetime:
    return START - timedelta(seconds=days_before_d * DAY)


def test_an_engagement_counts_only_for_days_after_the_day_it_arrived():
    table, rows = _profiles([
        ("u", "i0", "click", _at(1 / 1440)),          # arrived one minute before the start of D: counts
        ("u", "i1", "click", START),                  # arrived at the start of D: not for D
        ("u", "i2", "like", START + timedelta(hours=5)),
        ("u", "i3", "click", _at(29)),                # before the 28-day window
        ("u", "i4", "dwell", _at(2)), ("u", "i5", "impression", _at(2)), ("u", "i6", "hide", _at(2)),
    ], days=(D, D + timedelta(days=1)))
    on_d = table.profiles[rows[("u", D)]]
    assert np.flatnonzero(on_d).tolist() == [0] and on_d[0] == pytest.approx(1.0)
    assert table.recent[rows[("u", D)]].tolist() == [0, 8, 8, 8, 8]           # 8: the unknown (NaN) row
    next_day = table.recent[rows[("u", D + timedelta(days=1))]].tolist()
    assert next_day == [2, 1, 0, 8, 8]                                          # latest arrival first


def test_the_profile_is_the_decay_weighted_mean_by_arrival_age():
    table, rows = _profiles([("u", "i0", "click", _at(1)), ("u", "i1", "share", _at(8)),
                             ("u", "i1", "click", _at(15))])   # i1 again: its latest arrival (8 days) counts
    w0, w1 = 2 ** (-1 / 7), 2 ** (-8 / 7)                        # half-life 7 days
    assert features.CONTENT.half_life_days == 7.0
    expected = np.zeros(8)
    expected[0], expected[1] = w0 / (w0 + w1), w1 / (w0 + w1)
    np.testing.assert_allclose(table.profiles[rows[("u", D)]], expected, rtol=1e-6)


def test_recent_positives_are_the_k_latest_distinct_items():
    events = [("u", f"i{k}", "click", _at(10 - k)) for k in range(7)] + [("u", "i0", "like", _at(0.5))]
    table, rows = _profiles(events)
    assert features.CONTENT.recent_k == 5
    assert table.recent[rows[("u", D)]].tolist() == [0, 6, 5, 4, 3]


def test_a_user_without_positives_in_the_window_has_no_profile():
    table, rows = _profiles([("u", "i0", "click", _at(40))])
    assert ("u", D) not in rows or np.isnan(table.profiles[rows[("u", D)]]).all()
    got = table.table.inputs(np.array([-1]), np.array([0]))
    assert np.isnan(got["user_item_content_cos"]).all() and np.isnan(got["recent_positive_content_sim"]).all()


def test_similarities_hand_checked_and_nan_where_unknown():
    s = np.sqrt(0.5)
    profile = np.array([[2.0, 0.0], [1.0, 1.0], [np.nan, np.nan], [1.0, 0.0]])
    item = np.array([[s, s], [1.0, 0.0], [1.0, 0.0], [np.nan, np.nan]])
    recent = np.array([[[0.0, 1.0], [1.0, 0.0]], [[-1.0, 0.0], [np.nan, np.nan]],
                       [[np.nan, np.nan], [np.nan, np.nan]], [[1.0, 0.0], [0.0, 1.0]]])
    cos, best = cp.similarities(cp.unit(profile), cp.unit(item), cp.unit(recent.reshape(-1, 2)).reshape(4, 2, 2))
    np.testing.assert_allclose(cos[:2], [s, s])                 # profiles are normalised: length does not matter
    np.testing.assert_allclose(best[:2], [s, -1.0])             # padding (NaN) ignored
    assert np.isnan(cos[2:]).all() and np.isnan(best[2:]).all()


@pytest.mark.parametrize("dim", [3, 16, 64, 384])
def test_the_table_gives_the_same_values_in_any_block_size(monkeypatch, dim):
    """What lets a pod's request of 500 candidates equal the training set's block of thousands of rows."""
    rng = np.random.default_rng(3)
    emb = np.vstack([rng.normal(size=(50, dim)).astype(np.float32), np.full((1, dim), np.nan, np.float32)])
    table = cp.ContentTable.of(rng.normal(size=(21, dim)).astype(np.float32), rng.integers(0, 51, (21, 5)), emb)
    pairs, items = rng.integers(-1, 21, 1000), rng.integers(-1, 50, 1000)
    whole = table.inputs(pairs, items)
    monkeypatch.setattr(cp, "CHUNK_VALUES", 7 * dim * 7)       # blocks of 7 rows
    blocks = table.inputs(pairs, items)
    one = [table.inputs(pairs[k:k + 1], items[k:k + 1]) for k in range(0, 1000, 97)]
    for name in features.CONTENT_COLUMNS:
        assert np.array_equal(whole[name], blocks[name], equal_nan=True)
        assert np.array_equal(whole[name][::97], np.concatenate([o[name] for o in one]), equal_nan=True)


def test_profiles_are_the_same_computed_in_any_block_size(monkeypatch):
    rng = np.random.default_rng(4)
    pair_row = np.sort(rng.integers(0, 40, 600))
    item_row, age = rng.integers(0, 8, 600), rng.uniform(0, 28 * DAY, 600)
    order = np.lexsort((item_row, age, pair_row))
    args = (40, pair_row[order], item_row[order], age[order], EMB)
    whole = cp.from_positives(*args)
    monkeypatch.setattr(cp, "CHUNK_VALUES", 8 * 5)           # about five positives per block
    blocks = cp.from_positives(*args)
    assert np.array_equal(whole.profiles, blocks.profiles, equal_nan=True)
    assert np.array_equal(whole.recent, blocks.recent)
