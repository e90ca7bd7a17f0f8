"""Which click-based estimate tracks the truth? The gate's estimate beside variants, on a closed loop's pairs.

Why: the gate compares candidate and champion by plain NDCG@10 on the holdout's exploration lists (all of the
window's 14 days), and against the simulator's truth on the day's whole candidate pools that estimate came out
at about a quarter of the true difference, and some days with the other sign (docs/measurements.md, seed 10:
11-20 truth +0.027, estimate -0.008 [-0.017, +0.003]). Two suspects, each an estimate here:
- age: the window's older exploration lists judge both models on days both trained on, and in a drifting
  world a model fitted to newer days is not better there; so the same difference on lists of the last 1, 3
  and 7 days only, and by the lists' age;
- depth: the truth is each model's top 10 of a pool of ~3x the shown list, the estimate NDCG@10 of a random
  12 of it, nearly its whole order; so NDCG@1, @3 and @5 of the exploration lists too.
Pairs: each day's candidate (its run's model.txt) against the champion of the day, and earlier champions
against the day's champion (bench/challengers.py's pairs: the worse side). For each estimate: the share of
clear pairs (|truth| >= 0.01) whose estimate has the truth's sign, and its correlation with the truth.

    FEEDLOOP_STATE_DIR=<a loop's state> .venv/bin/python bench/estimates.py

It needs a closed loop's stack that is running or was brought back up (`make up` with the same state dir).
Writes bench/results/estimates.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from bench.challengers import GAPS, pool_days  # noqa: E402
from feedloop.core import layout as lake  # noqa: E402
from feedloop.core.config import load_settings  # noqa: E402
from feedloop.core.storage import ObjectStore  # noqa: E402
from feedloop.ops import audit, loop_audit  # noqa: E402
from feedloop.ops.simulate import Ids, World  # noqa: E402
from feedloop.ops.simulate.pools import DayPools, path_for  # noqa: E402
from feedloop.promotion.candidate import feature_matrix, feature_names, holdout  # noqa: E402
from feedloop.promotion.registry import Registry  # noqa: E402
from feedloop.training import train  # noqa: E402
from feedloop.training.evaluate import rank_within_group  # noqa: E402

CUTOFFS = (1, 3, 5, 10)
RECENT = (None, 7, 3, 1)  # exploration lists of the last N days of the window (None: all, as the gate)
CLOSE = 0.1  # pairs closer than this in truth: the ones a gate can get wrong (the first model is ~0.2 behind)


def day_pairs(store: ObjectStore, registry: Registry, settings, day: date) -> dict[str, tuple[str, dict]]:
    """name -> (model text, feature manifest): the day's champion, its candidate, and earlier champions."""
    champion = registry.champion_of(day)
    if champion is None:
        return {}
    models = {champion: (registry.read(champion, "model.txt").decode(), registry.manifest(champion)["feature_manifest"])}
    run = train.run_prefix(day)
    text = store.get(settings.s3.models_bucket, run + "model.txt")
    if text is not None:
        manifest = orjson.loads(store.get(settings.s3.models_bucket, run + "feature_manifest.json").body)
        models[f"candidate:{day}"] = (text.body.decode(), manifest)
    for gap in GAPS:
        version = registry.champion_of(day - timedelta(days=gap))
        if version and version not in models:
            models[version] = (registry.read(version, "model.txt").decode(),
                               registry.manifest(version)["feature_manifest"])
    return models


def differences(columns: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray, day: date) -> dict[str, float | None]:
    """Mean per-list NDCG@k of scorer a minus b on the exploration lists, by cutoff and recency, and by age."""
    explore = columns["explore"].astype(bool)
    gain = np.exp2(columns["label"][explore].astype(np.float64)) - 1.0
    _, first, gid = np.unique(columns["request_id"][explore], return_index=True, return_inverse=True)
    n = len(first)
    ages = (np.datetime64(day) - columns["day"][explore][first].astype("datetime64[D]")).astype(int)
    ideal = rank_within_group(gid, gain)
    ranks = {name: rank_within_group(gid, s[explore]) for name, s in (("a", a), ("b", b))}
    judged = np.bincount(gid, weights=gain, minlength=n) > 0
    out: dict[str, float | None] = {}
    for k in CUTOFFS:
        idcg = np.bincount(gid, weights=np.where(ideal <= k, gain / np.log2(ideal + 1.0), 0.0), minlength=n)
        ndcg = {name: np.bincount(gid, weights=np.where(r <= k, gain / np.log2(r + 1.0), 0.0), minlength=n)
                / np.where(judged, idcg, 1.0) for name, r in ranks.items()}
        diff = ndcg["a"] - ndcg["b"]
        for recent in RECENT:
            keep = judged & (ages < recent if recent else True)
            key = f"ndcg@{k} last {recent or 'all'}"
            out[key] = float(diff[keep].mean()) if keep.any() else None
            out["se " + key] = float(diff[keep].std(ddof=1) / np.sqrt(keep.sum())) if keep.sum() > 1 else None
            out[f"lists last {recent or 'all'}"] = int(keep.sum())
        if k == 10:
            for age in range(int(ages.max()) + 1):
                keep = judged & (ages == age)
                out[f"ndcg@10 age {age}"] = float(diff[keep].mean()) if keep.any() else None
    return out


def judge_day(settings, store: ObjectStore, registry: Registry, world: World, ids: Ids, day: date) -> list[dict]:
    models = day_pairs(store, registry, settings, day)
    if not models:
        return []
    champion = next(iter(models))
    truth = loop_audit.pool_ground_truth(store=store, settings=settings, day=day, world=world, ids=ids,
                                         pools=DayPools.load(path_for(settings.state_path, str(day))), models=models)
    if truth is None:
        return []
    wanted = list(dict.fromkeys(n for _, m in models.values() for n in feature_names(m)))
    columns = holdout(store, settings.s3.lake_bucket, lake.dataset_prefix(day), wanted)
    scores = {name: audit.lightgbm_matrix_scores(model_text=text, matrix=feature_matrix(columns, manifest, what=name))
              for name, (text, manifest) in models.items()}
    rows = []
    for name in list(models)[1:]:
        rows.append({"day": day.isoformat(), "champion": champion, "rival": name,
                     "kind": "candidate" if name.startswith("candidate:") else "earlier champion",
                     "truth": truth.ndcg[name] - truth.ndcg[champion],
                     **differences(columns, scores[name], scores[champion], day)})
        print(f"{day} {name:<28} truth {rows[-1]['truth']:+.4f}  gate's estimate "
              f"{_fmt(rows[-1]['ndcg@10 last all'])}  last 1 day {_fmt(rows[-1]['ndcg@10 last 1'])}", flush=True)
    return rows


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per estimate: sign agreement on clear pairs, and correlation and slope against the truth on all pairs."""
    out = {}
    for key in dict.fromkeys(k for r in rows for k in r if k.startswith("ndcg@") and " last " in k):
        pairs = [(r["truth"], r[key], r.get("se " + key) or np.nan) for r in rows if r.get(key) is not None]
        if len(pairs) < 2:
            continue
        truth, est, se = np.array(pairs).T
        clear, close = np.abs(truth) >= audit.LEVEL_MARGIN, np.abs(truth) < CLOSE
        z = est / se  # the estimate in its own standard errors: what a gate's interval sees
        out[key] = {"pairs": len(pairs), "clear": int(clear.sum()),
                    "sign_agrees": int((np.sign(est[clear]) == np.sign(truth[clear])).sum()),
                    "sure_right": int((clear & (np.abs(z) >= 1.96) & (np.sign(z) == np.sign(truth))).sum()),
                    "sure_wrong": int(((np.abs(z) >= 1.96) & (np.sign(z) != np.sign(truth))
                                       & (np.abs(truth) >= audit.LEVEL_MARGIN / 2)).sum()),
                    "close_correlation": float(np.corrcoef(truth[close], z[close])[0, 1]) if close.sum() > 2 else None,
                    "slope": float(np.polyfit(truth[close], est[close], 1)[0]) if close.sum() > 2 else None}
    return out


def by_age(rows: list[dict]) -> dict[int, dict[str, float]]:
    """NDCG@10's difference on the lists of each age (days before the holdout day) against the truth, close pairs:
    the slope through the origin (the share of the true difference that lists of that age show) and the correlation.
    Why: lists of days both models trained on may show less of their difference than the newest days do."""
    close = [r for r in rows if abs(r["truth"]) < CLOSE]
    out = {}
    for age in range(max((int(k.split()[-1]) for r in close for k in r if k.startswith("ndcg@10 age ")), default=-1) + 1):
        pairs = [(r["truth"], r[f"ndcg@10 age {age}"]) for r in close if r.get(f"ndcg@10 age {age}") is not None]
        if len(pairs) > 2:
            truth, est = np.array(pairs).T
            out[age] = {"pairs": len(pairs), "slope": float(truth @ est / (truth @ truth)),
                        "correlation": float(np.corrcoef(truth, est)[0, 1])}
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def main() -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ground-truth", type=Path, default=settings.state_path / "ground_truth.json")
    parser.add_argument("--day", type=date.fromisoformat, action="append",
                        help="a day to judge (repeatable; default: every day with pools and a training set)")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="rows of an earlier run of this script (its --out) to summarise with these")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimates.json")
    args = parser.parse_args()
    world = World.load(args.ground_truth)
    store, registry = ObjectStore.from_settings(settings), Registry.from_settings(settings)
    rows = [r for path in args.also for r in json.loads(path.read_text())["rows"]]
    rows += [r for day in args.day or pool_days(settings, store)
             for r in judge_day(settings, store, registry, world, Ids(world), day)]
    table, ages = summary(rows), by_age(rows)
    print_summary(table)
    print("NDCG@10 by the lists' age, close pairs: " + "; ".join(
        f"{age}: slope {a['slope']:.2f}, corr {a['correlation']:.2f} ({a['pairs']})" for age, a in ages.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": table, "by_age": ages}, indent=2))
    print(f"written {args.out}")


def print_summary(table: dict[str, dict]) -> None:
    print(f"{'estimate':<20} {'pairs':>5} {'clear':>5} {'sign agrees':>11} {'sure right':>10} {'sure wrong':>10} "
          f"{'corr(z, truth) close':>20} {'slope close':>11}")
    for key, s in table.items():
        print(f"{key:<20} {s['pairs']:>5} {s['clear']:>5} {s['sign_agrees']:>11} {s['sure_right']:>10} "
              f"{s['sure_wrong']:>10} {_fmt(s['close_correlation']):>20} {_fmt(s['slope']):>11}")


if __name__ == "__main__":
    main()
