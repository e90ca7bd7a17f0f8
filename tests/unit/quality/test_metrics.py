"""Hour aggregates in DuckDB: counts per (tenant, surface), orphan outcomes against this hour and the
lookback, impression keys; one reused connection whose calls never see each other's tables; the
one-row frame the metrics suite checks."""

from __future__ import annotations

import threading

import pandas as pd
import pyarrow as pa

from feedloop.quality.metrics import hour_metrics, impression_keys

_COLUMNS = ("tenant_id", "surface", "event_type", "request_id", "item_id")


def _rows(*rows: tuple) -> pa.Table:
    """Rows of (tenant, surface, type, request, item[, position]); position 2 unless given."""
    table = pa.table({c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(_COLUMNS)})
    return table.append_column("position", pa.array([r[5] if len(r) > 5 else 2 for r in rows], pa.int32()))


def _expected(rows: pa.Table, earlier_rows: list[pa.Table]) -> list[dict]:
    """The aggregates computed the plain way, in Python."""
    seen = {(r["request_id"], r["item_id"]) for t in [rows, *earlier_rows] for r in t.to_pylist()
            if r["event_type"] == "impression"}
    groups: dict[tuple, dict] = {}
    for r in rows.to_pylist():
        g = groups.setdefault((r["tenant_id"], r["surface"]), dict.fromkeys(
            ("rows", "impressions", "clicks", "outcomes", "orphan_outcomes", "first_position"), 0))
        g["rows"] += 1
        g["impressions"] += r["event_type"] == "impression"
        g["clicks"] += r["event_type"] == "click"
        g["first_position"] += r["event_type"] == "impression" and r["position"] == 1
        if r["event_type"] != "impression":
            g["outcomes"] += 1
            g["orphan_outcomes"] += (r["request_id"], r["item_id"]) not in seen
    out = []
    for (tenant, surface), g in groups.items():
        ctr = g["clicks"] / g["impressions"] if g["impressions"] else None
        out.append({"tenant_id": tenant, "surface": surface, "rows": g["rows"], "impressions": g["impressions"],
                    "clicks": g["clicks"], "ctr": ctr, "outcomes": g["outcomes"],
                    "orphan_outcomes": g["orphan_outcomes"], "first_position": g["first_position"]})
    return sorted(out, key=lambda r: (r["tenant_id"] is None, r["tenant_id"] or "", r["surface"] is None,
                                      r["surface"] or ""))


HOUR = _rows(
    ("acme", "feed", "impression", "r1", "i1", 1),
    ("acme", "feed", "impression", "r1", "i2"),
    ("acme", "feed", "click", "r1", "i1"),           # has its impression in this hour
    ("acme", "feed", "click", "r0", "i9"),           # impression in the previous hour
    ("acme", "feed", "dwell", "r7", "i7"),           # orphan
    ("globex", "search", "hide", "r8", "i8"),        # orphan, a group without impressions (ctr null)
    (None, "feed", "impression", "r2", "i1"),        # null tenant: a group of its own
    (None, None, "click", "r2", "i1"),
    ("acme", "feed", "bogus", "r3", "i3"),           # unknown type: an outcome, and an orphan
)
EARLIER = _rows(("acme", "feed", "impression", "r0", "i9"), ("acme", "feed", "click", "r7", "i7"))


def test_aggregates_and_orphans_match_the_plain_computation():
    m = hour_metrics(HOUR, [impression_keys(EARLIER)])
    assert m.table.column_names == ["tenant_id", "surface", "rows", "impressions", "clicks", "ctr", "outcomes",
                                    "orphan_outcomes", "first_position"]
    assert m.table.to_pylist() == _expected(HOUR, [EARLIER])
    assert m.summary()["rows"] == {"acme": 6, "globex": 1, "<null>": 2}


def test_without_lookback_the_previous_hours_impressions_do_not_count():
    m = hour_metrics(HOUR, [])
    assert m.table.to_pylist() == _expected(HOUR, [])
    assert sum(m.table.column("orphan_outcomes").to_pylist()) == 4


def test_impression_keys_are_those_of_impressions_only_and_match_the_lookback_keys():
    m = hour_metrics(HOUR, [])
    assert m.impression_keys.num_rows == 3
    assert m.impression_keys.column_names == ["k"] and m.impression_keys.schema.field("k").type == pa.uint64()
    assert sorted(m.impression_keys.column("k").to_pylist()) == sorted(impression_keys(HOUR).column("k").to_pylist())


def test_calls_on_the_shared_connection_are_isolated_across_threads():
    results: dict[int, list] = {}

    def run(i: int) -> None:
        rows = _rows(*[(f"t{i}", "feed", "impression", f"r{j}", "i") for j in range(i + 1)])
        results[i] = [hour_metrics(rows, []).table.to_pylist() for _ in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in results.items():
        assert all(r == [{"tenant_id": f"t{i}", "surface": "feed", "rows": i + 1, "impressions": i + 1, "clicks": 0,
                          "ctr": 0.0, "outcomes": 0, "orphan_outcomes": 0, "first_position": 0}] for r in runs)


def test_the_checked_frame_has_one_column_per_known_tenant_and_pair():
    frame = hour_metrics(HOUR, [impression_keys(EARLIER)]).checked(("acme", "initech"), ("feed", "search"))
    assert len(frame) == 1
    row = frame.iloc[0].to_dict()
    assert {k: row[k] for k in ("outcomes", "orphan_outcomes", "impressions", "first_position_share")} == {
        "outcomes": 6, "orphan_outcomes": 3, "impressions": 3, "first_position_share": 1 / 3}
    assert (row["rows@acme"], row["rows@initech"]) == (6, 0)  # a known tenant without rows: 0, not missing
    assert "rows@globex" not in row and "rows@<null>" not in row  # unknown tenants: no column of their own
    assert row["ctr@acme/feed"] == 1.0  # two clicks on two impressions
    assert pd.isna(row["ctr@acme/search"]) and pd.isna(row["ctr@initech/feed"])  # no impressions: null
    assert frame.dtypes["ctr@initech/feed"] == "float64"
