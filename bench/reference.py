"""Reference ranker: a hand-built LightGBM LambdaRank, outside the platform, judged by the ground truth.

    .venv/bin/python bench/reference.py [--day YYYY-MM-DD ...] [--ground-truth .feedloop/ground_truth.json]

Runs against the stack that holds a closed loop (`make demo`, or `feedloop demo --days N --seed S`):
its lake, its registry and the simulator's ground truth. For each held-out day H (default: the latest
day with a training set, datasets/ranker/<H>/), one short pipeline that shares nothing with feedloop's
dataset / features / train code:
  - reads the raw events of the lake with DuckDB, keeping only what had ARRIVED (ingest_ts) before H;
  - builds per-impression features as of the start of the impression's day (arrival days before it):
    smoothed item click rate, log item impressions, smoothed user click rate, smoothed user-author
    click rate and log user-author clicks (smoothing: the history's CTR as prior, weight PRIOR_WEIGHT);
  - labels each earlier impression 0 / click 1 / like 2 / share 3 and fits plain LambdaRank on every
    day before H (fixed rounds, no position debiasing, no early stopping);
  - judges the reference and the model feedloop served on H (the impressions' model_version) by
    ground-truth NDCG@10 on H's whole candidate pools (the simulator keeps them, <state>/pools/H.npz):
    each ranker's top 10 of every request's pool, feedloop's with the features its pods served on H,
    the figure bench/loop.py reports. Why pools: the shown lists were chosen by the served model, and
    reranking its own picks makes every other ranker look better than it (feedloop.ops.simulate.pools);
  - and, for reference, the same rankers and the logged order on H's shown lists (the holdout split).
Prints a table and writes bench/results/reference.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

FEATURES = ("item_ctr", "item_impr_log", "user_ctr", "user_author_ctr", "user_author_clicks_log")
PRIOR_WEIGHT = 20.0  # impressions' worth of the prior CTR in every smoothed rate
PARAMS = {"objective": "lambdarank", "num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 50,
          "lambdarank_truncation_level": 20, "num_threads": 2, "seed": 7, "deterministic": True,
          "force_row_wise": True, "verbosity": -1}
ROUNDS = 200
HOLDOUT_COLUMNS = ("request_id", "user_id", "item_id", "author_id", "position", "model_version")

_DAILY = """
CREATE TABLE {name} AS
SELECT {keys}, CAST(ingest_ts AS DATE) AS a,
       count(*) FILTER (WHERE event_type = 'impression') AS impr,
       count(*) FILTER (WHERE event_type = 'click') AS clicks
FROM ev WHERE {not_null} GROUP BY ALL"""

_AS_OF = """
CREATE TABLE {name}_asof AS
SELECT k.{key_list}, k.d, sum(x.impr) AS impr, sum(x.clicks) AS clicks
FROM (SELECT DISTINCT {keys}, d FROM rows) k
JOIN {name} x ON {join} AND x.a < k.d
GROUP BY ALL"""

_FEATURES = """
SELECT r.rn, r.request_id, r.d, r.label,
       (coalesce(i.clicks, 0) + $prior * $w) / (coalesce(i.impr, 0) + $w) AS item_ctr,
       ln(1 + coalesce(i.impr, 0)) AS item_impr_log,
       (coalesce(u.clicks, 0) + $prior * $w) / (coalesce(u.impr, 0) + $w) AS user_ctr,
       (coalesce(ua.clicks, 0) + $prior * $w) / (coalesce(ua.impr, 0) + $w) AS user_author_ctr,
       ln(1 + coalesce(ua.clicks, 0)) AS user_author_clicks_log
FROM rows r
LEFT JOIN item_daily_asof i ON i.item_id = r.item_id AND i.d = r.d
LEFT JOIN user_daily_asof u ON u.user_id = r.user_id AND u.d = r.d
LEFT JOIN user_author_daily_asof ua ON ua.user_id = r.user_id AND ua.author_id = r.author_id AND ua.d = r.d
ORDER BY r.rn"""


def event_files(settings, store) -> list[str]:
    from feedloop.core import layout as lake

    bucket = settings.s3.lake_bucket
    return [f"s3://{bucket}/{k}" for k in store.list_keys(bucket, lake.EVENTS_PREFIX)
            if (ref := lake.parse_key(k)) and ref.topic == settings.kafka.topic]


def holdout_days(settings, store) -> list[date]:
    from feedloop.core import layout as lake

    days = {k[len(lake.DATASETS_PREFIX):].split("/", 1)[0]
            for k in store.list_keys(settings.s3.lake_bucket, lake.DATASETS_PREFIX) if "/split=holdout/" in k}
    return sorted(date.fromisoformat(d) for d in days)


def reference_features(settings, files: list[str], held_out: date, holdout):
    """Training rows (impressions before `held_out`, labelled) and the rows to score (`holdout`: request_id,
    user_id, item_id, author_id), with the reference's point-in-time features, from events that arrived
    before `held_out` only."""
    import pyarrow as pa

    from feedloop.core import duck

    cutoff = datetime(held_out.year, held_out.month, held_out.day, tzinfo=timezone.utc)
    con = duck.connect(settings, memory_limit="2GB", threads=2)
    try:
        file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"""CREATE TABLE ev AS SELECT request_id, user_id, item_id, author_id, position, event_type,
                               event_ts, ingest_ts
                        FROM read_parquet([{file_list}], union_by_name = true) WHERE ingest_ts < ?""", [cutoff])
        con.execute("""
            CREATE TABLE lab AS SELECT request_id, item_id, max(CASE event_type WHEN 'share' THEN 3 WHEN 'like' THEN 2
                                                                  ELSE 1 END) AS label
            FROM ev WHERE event_type IN ('click', 'like', 'share') GROUP BY ALL""")
        con.register("held", pa.table({**{c: holdout[c] for c in ("request_id", "user_id", "item_id", "author_id")},
                                       "rn": pa.array(range(len(holdout["request_id"])), pa.int64())}))
        con.execute("""
            CREATE TABLE rows AS
            SELECT -1 - row_number() OVER (ORDER BY i.request_id, i.position) AS rn, i.request_id, i.user_id,
                   i.item_id, i.author_id, i.d, coalesce(l.label, 0) AS label
            FROM (SELECT *, CAST(event_ts AS DATE) AS d FROM ev WHERE event_type = 'impression'
                  QUALIFY row_number() OVER (PARTITION BY request_id, item_id ORDER BY event_ts) = 1) i
            LEFT JOIN lab l USING (request_id, item_id)
            UNION ALL
            SELECT rn, request_id, user_id, item_id, author_id, ?::DATE AS d, NULL AS label FROM held""",
                    [held_out])
        for name, keys in (("item_daily", ("item_id",)), ("user_daily", ("user_id",)),
                           ("user_author_daily", ("user_id", "author_id"))):
            con.execute(_DAILY.format(name=name, keys=", ".join(keys),
                                      not_null=" AND ".join(f"{k} IS NOT NULL" for k in keys)))
            con.execute(_AS_OF.format(name=name, keys=", ".join(keys), key_list=", k.".join(keys),
                                      join=" AND ".join(f"x.{k} = k.{k}" for k in keys)))
        prior = con.execute("SELECT count(*) FILTER (WHERE event_type = 'click') / "
                            "greatest(count(*) FILTER (WHERE event_type = 'impression'), 1) FROM ev").fetchone()[0]
        table = con.execute(_FEATURES, {"prior": prior, "w": PRIOR_WEIGHT}).fetch_arrow_table()
    finally:
        con.close()
    return table, prior


def train_reference(table):
    """Plain LambdaRank on the training rows (rn < 0; rows of a request are contiguous: ordered by request)."""
    import lightgbm as lgb
    import numpy as np

    rn = table["rn"].to_numpy()
    train = table.filter(np.asarray(rn < 0))
    requests = np.asarray(train["request_id"].to_pylist(), dtype=object)
    starts = np.flatnonzero(np.r_[True, requests[1:] != requests[:-1]])
    groups = np.diff(np.r_[starts, len(requests)])
    matrix = np.column_stack([train[f].to_numpy() for f in FEATURES])
    data = lgb.Dataset(matrix, label=train["label"].to_numpy(), group=groups, feature_name=list(FEATURES))
    booster = lgb.train(PARAMS, data, num_boost_round=ROUNDS)
    days = sorted({str(d) for d in train["d"].to_pylist()})
    return booster, {"train_rows": int(len(requests)), "train_lists": int(len(groups)), "train_days": days}


def served_scores(registry, holdout):
    """The scores of the model most of the held-out day's lists were served by, or None (legacy served)."""
    from feedloop.ops import audit
    from feedloop.ops import loop_audit

    served = Counter(v for _, v in set(zip(holdout["request_id"], holdout["model_version"])) if v)  # lists
    if not served:
        return None, dict(served)
    version = served.most_common(1)[0][0]
    manifest = registry.manifest(version)["feature_manifest"]
    scores = audit.lightgbm_scores(model_text=registry.read(version, "model.txt").decode(),
                                   feature_columns=loop_audit.feature_columns(manifest), columns=holdout)
    return (version, scores), dict(served)


def pool_rows(pools, world, ids) -> dict:
    """Every candidate of every request of the day, in pool order, as rows to score."""
    import numpy as np

    items = np.concatenate([pools.pool(r) for r in range(len(pools))])
    sizes = np.diff(np.asarray(pools.offsets))
    users = np.repeat(np.asarray(pools.users), sizes)
    return {"request_id": np.repeat(np.asarray(pools.request_ids, dtype=object), sizes),
            "user_id": np.array([ids.user(int(u)) for u in users], dtype=object),
            "item_id": np.array([ids.item(int(i)) for i in items], dtype=object),
            "author_id": np.array([ids.author(int(a)) for a in world.item_author[items]], dtype=object)}


def reference_day(settings, store, registry, world, ids, held_out: date) -> dict:
    """The reference and the served model on `held_out`'s whole candidate pools, and with the logged order on
    its shown lists, by ground-truth NDCG@10."""
    import numpy as np

    from feedloop.ops import audit
    from feedloop.ops import loop_audit
    from feedloop.ops.simulate import pools

    t0 = time.perf_counter()
    bucket = settings.s3.lake_bucket
    versions = {v for v in loop_audit.read_holdout(store, bucket, held_out, ["model_version"])["model_version"] if v}
    served_columns = [c for v in sorted(versions)
                      for c in loop_audit.feature_columns(registry.manifest(v)["feature_manifest"])]
    holdout = loop_audit.read_holdout(store, bucket, held_out, list(dict.fromkeys([*HOLDOUT_COLUMNS, *served_columns])))
    shown = len(holdout["request_id"])
    pools_path = pools.path_for(settings.state_path, held_out.isoformat())
    day_pools = pools.DayPools.load(pools_path) if pools_path.exists() else None
    candidates = pool_rows(day_pools, world, ids) if day_pools is not None and len(day_pools) else None
    to_score = {c: np.concatenate([holdout[c], candidates[c]]) if candidates else holdout[c]
                for c in ("request_id", "user_id", "item_id", "author_id")}
    table, prior = reference_features(settings, event_files(settings, store), held_out, to_score)
    booster, fit = train_reference(table)
    held = table.filter(np.asarray(table["rn"].to_numpy() >= 0))
    reference = booster.predict(np.column_stack([held[f].to_numpy() for f in FEATURES]))
    scores = {"reference": reference[:shown], "logged order": -holdout["position"].astype(np.float64)}
    served, by_version = served_scores(registry, holdout)
    on_pools = None
    if candidates is not None:
        on_pools = audit.pool_ndcg(users=np.asarray(day_pools.users), offsets=np.asarray(day_pools.offsets),
                                   items=np.concatenate([day_pools.pool(r) for r in range(len(day_pools))]),
                                   scores={"reference": reference[shown:]}, world=world).ndcg
        if served is not None:
            version = served[0]
            found = loop_audit.pool_ground_truth(
                store=store, settings=settings, day=held_out, pools=day_pools, world=world, ids=ids,
                models={"served": (registry.read(version, "model.txt").decode(),
                                   registry.manifest(version)["feature_manifest"])})
            on_pools[f"feedloop served ({version})"] = found.ndcg["served"] if found else float("nan")
    if served is not None:
        scores[f"feedloop served ({served[0]})"] = served[1]
    result = audit.ground_truth_ndcg(request_ids=holdout["request_id"], user_ids=holdout["user_id"],
                                     item_ids=holdout["item_id"], positions=holdout["position"], scores=scores,
                                     world=world, ids=ids)
    return {"day": held_out.isoformat(), "lists": result.lists, "rows": shown,
            "pools": len(day_pools) if candidates is not None else 0,
            "pool_ndcg@10": {k: round(v, 4) for k, v in (on_pools or {}).items()},
            "ndcg@10": {k: round(v, 4) for k, v in result.ndcg.items()}, "served_lists_by_version": by_version,
            "prior_ctr": round(prior, 5), **fit, "features": list(FEATURES), "params": PARAMS, "rounds": ROUNDS,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    from feedloop.core.config import load_settings
    from feedloop.promotion.registry import Registry
    from feedloop.ops.simulate import Ids, World
    from feedloop.core.storage import ObjectStore

    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day", type=date.fromisoformat, action="append",
                        help="held-out day (repeatable; default: the latest day with a training set)")
    parser.add_argument("--ground-truth", type=Path, default=settings.state_path / "ground_truth.json",
                        help="the simulator's ground truth (default: the demo's)")
    args = parser.parse_args()
    if not args.ground_truth.exists():
        sys.exit(f"no ground truth at {args.ground_truth}: run the closed loop first (make demo), or pass "
                 "--ground-truth")
    store, registry = ObjectStore.from_settings(settings), Registry.from_settings(settings)
    world = World.load(args.ground_truth)
    ids = Ids(world)
    available = holdout_days(settings, store)
    if not available:
        sys.exit(f"no training set under s3://{settings.s3.lake_bucket}/datasets/ranker/: run the closed loop first")
    results = [reference_day(settings, store, registry, world, ids, day) for day in args.day or available[-1:]]

    out = ROOT / "bench" / "results" / "reference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ground_truth": str(args.ground_truth), "days": results}, indent=2))
    print("ground-truth NDCG@10 (gain sigmoid(utility - 1)) on the held-out day")
    for r in results:
        print(f"held-out {r['day']}: reference trained on {len(r['train_days'])} day(s) "
              f"({r['train_days'][0] if r['train_days'] else '-'}..{r['train_days'][-1] if r['train_days'] else '-'}), "
              f"{r['train_rows']:,} impressions; {r['seconds']} s")
        print(f"  on {r['pools']:,} requests' whole candidate pools (top 10 of each pool, over the pool's best 10):"
              if r["pools"] else "  no candidate pools kept for this day (simulated before pools were kept)")
        for name, value in sorted(r["pool_ndcg@10"].items(), key=lambda kv: -kv[1]):
            print(f"   {name:<42} {value:.4f}")
        print(f"  on its {r['lists']:,} shown lists ({r['rows']:,} items; chosen by the served model, which "
              "makes it look worse than it is there):")
        for name, value in sorted(r["ndcg@10"].items(), key=lambda kv: -kv[1]):
            print(f"   {name:<42} {value:.4f}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
