"""dataset.build pinned on a fixed lake: every row, label, weight and feature, the serving snapshot, the content
hash and the lineage equal the golden files written by the builder of 2026-12 (before its rework for speed).

The lake is generated here, deterministically: six event days plus the day after the window, three configured
tenants and one unknown, late arrivals across day boundaries (some after the label cutoff), outcomes before, inside
and after the attribution window, explore lists, duplicated impressions (same day and across midnight), new users
and items missing from the catalog. Rewritten on purpose since: exploration lists of every day moved to the
holdout split (2026-12-05); the content-similarity features (2026-12-05: item embeddings added to the lake, two
feature columns and the snapshot's profile and embedding columns new, every other column unchanged). Regenerate
the golden files only on purpose, for a change of semantics:
WRITE_GOLDEN_DATASET=1 .venv/bin/python -m pytest tests/integration/test_dataset_golden.py
"""

from __future__ import annotations

import io
import json
import os
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.contract import events
from feedloop.core import layout
from feedloop.features import dataset
from feedloop.features import definitions as features
from tests.integration.test_dataset import read_split, write_catalog, write_embeddings, write_events

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden" / "dataset"
FIRST = date(2031, 5, 1)          # history only; the window is [FIRST + 1, FIRST + 6)
END = FIRST + timedelta(days=6)
TOPIC = "golden-dataset"
TENANTS = ("acme", "globex", "initech", "umbrella")   # umbrella is not configured: its category code is NaN


def _utc(d: date, seconds: float) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def _lake() -> tuple[list[dict[str, Any]], dict[str, tuple[str, str, datetime]]]:
    """The fixed events (with `_arrival`) and item catalog."""
    rng = random.Random(20)
    items = {t: [f"{t}-i{k:02d}" for k in range(14)] for t in TENANTS}
    author = {i: f"{i.split('-')[0]}-a{int(i[-2:]) % 4}" for its in items.values() for i in its}
    catalog = {i: (author[i], f"topic-{int(i[-2:]) % 5}", _utc(FIRST - timedelta(days=int(i[-2:])), 3600.0 * k))
               for k, i in enumerate(sorted(author)) if int(i[-2:]) < 11}       # items 11-13: new, not in the catalog
    out: list[dict[str, Any]] = []

    def event(base: dict[str, Any], event_type: str, ts: datetime, arrival: datetime, n: int, **kw) -> None:
        out.append({**base, "event_id": f"{base['request_id']}-{base['item_id']}-{event_type}-{n}",
                    "event_ts": events.format_ts(ts), "event_type": event_type, "dwell_ms": kw.get("dwell_ms"),
                    "_arrival": arrival})

    for day in (FIRST + timedelta(days=k) for k in range(7)):
        for r in range(36):
            tenant = TENANTS[r % 4] if r % 9 else "umbrella"
            users = 6 + (day - FIRST).days                            # a new user or two every day
            user = f"{tenant}-u{rng.randrange(users):02d}"
            surface = rng.choice(events.SURFACES)
            explore = surface == "feed" and rng.random() < 0.5
            ts = _utc(day, rng.choice([rng.uniform(0, 86_400), rng.uniform(86_100, 86_399)]))   # some near midnight
            request = f"r-{day:%m%d}-{r:02d}"
            shown = rng.sample(items[tenant], rng.randint(2, 7))
            late = rng.random() < 0.15
            for pos, item in enumerate(shown, start=1):
                base = {"tenant_id": tenant, "user_id": user, "item_id": item, "author_id": author[item],
                        "request_id": request, "surface": surface, "position": pos, "device": rng.choice(events.DEVICES),
                        "query": "q" if surface == "search" else None, "schema_version": 1,
                        "explore": explore if rng.random() < 0.9 else None,
                        "model_version": "v1" if r % 3 == 0 else None}
                arrival = ts + timedelta(hours=rng.uniform(1, 40)) if late else ts + timedelta(seconds=2)
                event(base, "impression", ts, arrival, 0)
                if rng.random() < 0.08:                              # a duplicate: same day or just after midnight
                    again = ts + timedelta(seconds=rng.choice([0, 1, 300]))
                    event(base, "impression", again, again + timedelta(seconds=3), 1)
                if rng.random() < 0.6 / pos:
                    click = ts + timedelta(seconds=rng.choice([3, 40, 1500, 3500, 3700]))   # 3700 s: after 60 min
                    event(base, "click", click, click + timedelta(seconds=rng.choice([1, 1, 7200])), 0)
                    event(base, "dwell", click + timedelta(seconds=20), click + timedelta(seconds=21), 0,
                          dwell_ms=rng.choice([5_000, 30_000, 45_000]))
                    if rng.random() < 0.3:
                        event(base, "like", click + timedelta(seconds=30), click + timedelta(seconds=31), 0)
                    if rng.random() < 0.15:
                        event(base, "share", click + timedelta(seconds=40), click + timedelta(seconds=41), 0)
                elif rng.random() < 0.08:
                    event(base, "hide", ts + timedelta(seconds=5), ts + timedelta(seconds=6), 0)
                if rng.random() < 0.03:                              # an outcome stamped before its impression
                    event(base, "click", ts - timedelta(seconds=10), ts, 1)
    return out, catalog


def _embeddings(catalog: dict[str, tuple[str, str, datetime]]) -> dict[str, list[float]]:
    """Topic one-hot plus noise, L2-normalised, for catalog items 0-8 (9 and 10 have none) and new item 12 (not
    in the catalog: never used)."""
    rng = np.random.default_rng(19)
    out = {}
    for item in sorted(catalog) + [f"{t}-i12" for t in TENANTS]:
        if int(item[-2:]) in (9, 10):
            continue
        v = np.zeros(6)
        v[int(item[-2:]) % 5] = 1.0
        v += rng.normal(0, 0.3, 6)
        out[item] = (v / np.linalg.norm(v)).tolist()
    return out


def _settings(embedded):
    return embedded.model_copy(update={
        "kafka": embedded.kafka.model_copy(update={"topic": TOPIC}),
        "retrain": embedded.retrain.model_copy(update={"start_date": FIRST + timedelta(days=1)}),
        "dataset": embedded.dataset.model_copy(update={"window_days": 5, "min_exploration_impressions": 60,
                                                       "batch_rows": 1000, "rows_per_file": 1000}),
    })


def _built(embedded, store) -> dict[str, Any]:
    settings = _settings(embedded)
    evs, catalog = _lake()
    write_catalog(store, settings, catalog)
    write_embeddings(store, settings, _embeddings(catalog))
    write_events(store, settings, evs)
    try:
        result = dataset.build(settings, end=END, store=store)
    finally:
        store.delete(settings.s3.lake_bucket, layout.CATALOG_EMBEDDINGS_KEY)   # other tests' lakes have none
    bucket, prefix = settings.s3.lake_bucket, result.uri.split("/", 3)[3]
    lineage = store.get_json(bucket, prefix + "lineage.json")
    lineage["inputs"] = sorted(lineage["inputs"])          # keys only: ETags follow the Parquet writer's version
    tables = {f"split-{s}": read_split(store, settings, END - timedelta(days=1), s) for s in dataset.SPLITS}
    for key in sorted(store.list_keys(bucket, prefix + "snapshot/")):
        tables["snapshot-" + key.rsplit("/", 1)[1].removesuffix(".parquet")] = pq.read_table(
            io.BytesIO(store.get(bucket, key).body))
    return {"tables": tables, "lineage": lineage, "propensity": store.get_json(bucket, prefix + "propensity.json")}


def _write_golden(built: dict[str, Any]) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, table in built["tables"].items():
        pq.write_table(table, GOLDEN / f"{name}.parquet")
    meta = {"lineage": built["lineage"], "propensity": built["propensity"], "tables": sorted(built["tables"])}
    (GOLDEN / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def assert_tables_equal(got: pa.Table, want: pa.Table, name: str) -> None:
    """Same columns, types and rows in the same order; floats within 1e-12 (NaN where NaN)."""
    assert got.schema.names == want.schema.names, name
    assert got.schema.types == want.schema.types, name
    assert got.num_rows == want.num_rows, name
    for column in want.schema.names:
        if pa.types.is_floating(want.schema.field(column).type):
            g, w = (t[column].to_numpy(zero_copy_only=False).astype(np.float64) for t in (got, want))
            assert np.array_equal(np.isnan(g), np.isnan(w)), (name, column)
            assert np.allclose(g, w, rtol=0, atol=1e-12, equal_nan=True), (name, column, np.abs(g - w).max())
        else:
            assert got[column].to_pylist() == want[column].to_pylist(), (name, column)


def test_the_fixture_lake_exercises_what_it_claims():
    evs, catalog = _lake()
    impressions = [e for e in evs if e["event_type"] == "impression"]
    keys = [(e["request_id"], e["item_id"]) for e in impressions]
    assert len(keys) - len(set(keys)) >= 10                                   # duplicated impressions
    assert any(e["_arrival"].date() > datetime.fromisoformat(e["event_ts"]).date() for e in evs)   # late, next day
    assert any(e["_arrival"] > _utc(END, 3600) for e in evs)                 # after the label cutoff
    assert {e["tenant_id"] for e in evs} == set(TENANTS)
    assert any(e["item_id"] not in catalog for e in impressions)             # new items
    assert sum(1 for e in impressions if e["explore"]) > 60                   # feed gets an exploration curve


def test_the_build_equals_the_golden_files_row_for_row(embedded, store):
    built = _built(embedded, store)
    if os.environ.get("WRITE_GOLDEN_DATASET") == "1":
        _write_golden(built)
    meta = json.loads((GOLDEN / "meta.json").read_text())
    assert sorted(built["tables"]) == meta["tables"]
    for name in meta["tables"]:
        assert_tables_equal(built["tables"][name], pq.read_table(GOLDEN / f"{name}.parquet"), name)
    # The click model's EM sums in the order DuckDB groups rows, so its curves move in the last bits between runs.
    got, want = built["propensity"], meta["propensity"]
    assert {k: v for k, v in got.items() if k != "curves"} == {k: v for k, v in want.items() if k != "curves"}
    assert {s: pytest.approx(c, rel=1e-6) for s, c in want["curves"].items()} == got["curves"]
    assert built["lineage"] == meta["lineage"]           # rows per split, content hash, inputs, feature manifest
    holdout = built["tables"]["split-holdout"]
    assert holdout.num_rows > 100 and set(holdout[features.column("tenant_id")].to_pylist()) >= {0.0, 1.0, 2.0}
    # exploration lists of every window day are held out (the gate compares on them), never trained on
    assert not any(built["tables"][f"split-{s}"]["explore"].to_pylist().count(True) for s in ("train", "valid"))
    explored_days = {d for d, x in zip(holdout["day"].to_pylist(), holdout["explore"].to_pylist()) if x}
    assert len(explored_days) > 1
