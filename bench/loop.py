"""The closed loop for weeks, with several simulated worlds: does the gate agree with the truth, and does
the feed the users get keep improving?

    .venv/bin/python bench/loop.py [--days 21] [--seeds 7,8,9] [--kafka-storage memory]

Per seed, on a fresh embedded stack of its own (state in .feedloop-bench/loop-<seed>/, the default
ports: stop a `make demo` stack first), exactly `feedloop demo --days N --seed S`: each day the
simulated users get their feeds from two serving pods, `ingest_engagement` lands the day and
`retrain_ranker` runs for it through Airflow (validate, build, publish features, train, evaluate,
export, gate, refit, register, flip); the pods follow the pointers. Every retrain is audited against
the simulator's hidden utility (feedloop.ops.loop_audit). Then, per seed and over all seeds:

- gate agreement: on the days where the candidate and its champion differ by at least 0.01 in
  ground-truth NDCG@10 on the day's candidate pools (each model's top 10 of every request's whole
  pool, with the features the pods served: what it would have served), how often the gate promoted
  the better / held the worse;
- served ground-truth NDCG@10 averaged over the last 7 days, and the legacy policy's on the same requests;
- every promotion's effect: the new version against the one it replaced on the next day's candidate
  pools (what users got against what they would have got), and the served ground truth of that day
  against the day before, less the legacy policy's change on the same days' requests (the requests' noise);
- refit vs its evaluated twin on the next day's pools (is serving the refit worth it?);
- a ceiling: the last day's training set relabelled with the hidden utility (graded 0-4), trained with
  the same recipe, on the held-out day's pools, beside the model that served that day on the same pools:
  what these features could reach without click noise;
- the hand-built reference (bench/reference.py: plain LambdaRank on five point-in-time counters, every
  day before the last) against the model that served the last day, on that day's pools.
- the gate's other side (bench/challengers.py): on each of the last 7 days, earlier champions challenge
  the day's champion, judged as the gate judges and by the truth on the day's pools.

    .venv/bin/python bench/loop.py --report bench/results/loop.json   # the tables again from a saved run
    .venv/bin/python bench/loop.py --seeds 10 --summarize   # the audits again on seed 10's kept stack

Prints the tables and writes bench/results/loop.json. Gate agreement and ground truth are not speed
figures, but the run takes about 15 min a seed on 2 cores: run it alone.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from feedloop.ops import audit  # noqa: E402
from feedloop.ops import demo
from feedloop.features import definitions as features
from feedloop.core import layout as lake
from feedloop.ops import loop_audit
from feedloop.ops import loop_table
from feedloop.ops import simulate
from feedloop.ops.simulate import pools
from feedloop.ops.simulate.pools import DayPools
from feedloop.ops import stack
from feedloop.training import train
from feedloop.core.config import Settings, load_settings  # noqa: E402
from feedloop.promotion.registry import Registry  # noqa: E402
from feedloop.core.storage import ObjectStore  # noqa: E402
from bench import challengers, estimates, reference  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLEAR = audit.LEVEL_MARGIN  # candidate and champion differ by at least this in ground truth: a clear decision
LAST_DAYS = 7


def run_seed(seed: int, days: int, state: Path, *, with_estimates: bool = False) -> dict:
    """One closed loop in the world of `seed`, from a fresh stack; its demo result plus the extra audits
    (with_estimates: bench/estimates.py's variants of the gate's estimate on every day, ~1 min a day)."""
    if state.exists():
        shutil.rmtree(state)
    os.environ["FEEDLOOP_STATE_DIR"] = str(state)
    t0 = time.perf_counter()
    try:
        result = demo.run(load_settings(), days=days, seed=seed,
                          echo=lambda line: print(f"[seed {seed}] {line}", flush=True))
        return {"seed": seed, **audit_seed(result, with_estimates=with_estimates),
                "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        stack.down(load_settings(), echo=lambda line: None)


def summarize_kept(seed: int, state: Path, *, with_estimates: bool = False) -> dict:
    """The audits again on a finished seed's kept stack (its state folder: demo_table.json and the S3 data), so
    that a failure after the loop's days costs minutes, not the loop. Only S3 is started, on the default ports."""
    os.environ.update({"FEEDLOOP_STATE_DIR": str(state), "FEEDLOOP_STACK__EMBEDDED_KAFKA": "false",
                       "FEEDLOOP_STACK__EMBEDDED_AIRFLOW": "false"})
    result = json.loads((state / demo.TABLE_FILE).read_text())
    if result.get("seed") != seed:
        raise SystemExit(f"{state / demo.TABLE_FILE} is the loop of seed {result.get('seed')}, not {seed}")
    stack.up(load_settings(), echo=lambda line: print(line, file=sys.stderr))
    try:
        return {"seed": seed, **audit_seed(result, with_estimates=with_estimates), "seconds": result.get("seconds")}
    finally:
        stack.down(load_settings(), echo=lambda line: None)


def audit_seed(result: dict, *, with_estimates: bool) -> dict:
    """The demo result's table with the audits of its stack (running) and their summary."""
    settings, _ = demo.closed_loop_settings(load_settings(), date.fromisoformat(result["start"]))
    days, seed = result["days"], result["seed"]
    sim = simulate.Simulator(settings, start=date.fromisoformat(result["start"]), days=days,
                             events_per_day=settings.simulate.events_per_day, seed=seed)
    rows = result["table"]
    last = date.fromisoformat(rows[-1]["day"])
    store, registry = ObjectStore.from_settings(settings), Registry.from_settings(settings)
    extra = {"promotions": promotion_effects(settings, rows, sim),
             "refits": refit_vs_twin(settings, rows, sim),
             "ceiling": ceiling(settings, last, sim),
             "reference": reference.reference_day(settings, store, registry, sim.world, sim.ids, last),
             "challengers": [r for row in rows[-LAST_DAYS:] for r in challengers.challenge_day(
                 settings, store, registry, sim.world, sim.ids, date.fromisoformat(row["day"]))]}
    if with_estimates:
        extra["estimates"] = [r for row in rows for r in estimates.judge_day(
            settings, store, registry, sim.world, sim.ids, date.fromisoformat(row["day"]))]
    return {"table": rows, **extra, "summary": summarize(rows, extra)}


def promotion_effects(settings: Settings, rows: list[dict], sim: simulate.Simulator) -> list[dict]:
    """Each promotion of day D (serving from D + 1): the new vs the replaced version on D + 1's candidate pools
    (what users got vs what they would have got without the promotion); and the served ground truth of D + 1
    vs D, with the legacy policy's on each day's requests as the control for the requests' noise."""
    registry = Registry.from_settings(settings)
    out = []
    for effect in served_effects(rows):
        scored = _score_versions(settings, registry, date.fromisoformat(effect["served_day"]), sim,
                                 {"new": effect["new"], "old": effect["old"]})
        out.append({**effect, "lists": scored.lists, "pool_new": scored.ndcg["new"],
                    "pool_old": scored.ndcg["old"], "pool_delta": scored.ndcg["new"] - scored.ndcg["old"]})
    return out


def served_effects(rows: list[dict]) -> list[dict]:
    """Each promotion's change in served ground-truth NDCG@10 (the candidate pool's, as served): the day the
    new version served minus the day before, and the legacy policy's change on the same requests (noise)."""
    out = []
    for before, after in zip(rows, rows[1:]):
        flip = before["retrain"].get("flip") or {}
        if not flip.get("flipped") or not flip.get("previous"):
            continue
        a, b = after["stats"], before["stats"]
        out.append({"day": before["day"], "served_day": after["day"], "new": flip["version"], "old": flip["previous"],
                    "served_before": b["ndcg"], "served_after": a["ndcg"], "delta": a["ndcg"] - b["ndcg"],
                    "legacy_delta": a["legacy_ndcg"] - b["legacy_ndcg"]})
    return out


def refit_vs_twin(settings: Settings, rows: list[dict], sim: simulate.Simulator) -> list[dict]:
    """Each refit that served day D: it and its evaluated twin on D's candidate pools (neither trained on D)."""
    registry = Registry.from_settings(settings)
    out = []
    for row in rows:
        champion = (row.get("audit") or {}).get("champion")
        manifest = registry.manifest(champion) if champion else None
        if not manifest or not manifest.get("evaluated_twin"):
            continue
        scored = _score_versions(settings, registry, date.fromisoformat(row["day"]), sim,
                                 {"refit": champion, "twin": manifest["evaluated_twin"]})
        out.append({"day": row["day"], "refit": champion, "twin": manifest["evaluated_twin"], "lists": scored.lists,
                    "refit_ndcg": scored.ndcg["refit"], "twin_ndcg": scored.ndcg["twin"],
                    "delta": scored.ndcg["refit"] - scored.ndcg["twin"]})
    return out


def _score_versions(settings: Settings, registry: Registry, day: date, sim: simulate.Simulator,
                    versions: dict[str, str]) -> audit.GroundTruthNdcg:
    """Registered versions ranking `day`'s whole candidate pools with the features the pods served that day."""
    models = {name: (registry.read(v, "model.txt").decode(), registry.manifest(v)["feature_manifest"])
              for name, v in versions.items()}
    return _on_pools(settings, day, sim, models)


def _on_pools(settings: Settings, day: date, sim: simulate.Simulator, models: dict) -> audit.GroundTruthNdcg:
    found = loop_audit.pool_ground_truth(
        store=ObjectStore.from_settings(settings), settings=settings, day=day, world=sim.world, ids=sim.ids,
        pools=DayPools.load(pools.path_for(settings.state_path, str(day))), models=models)
    if found is None:
        raise FileNotFoundError(f"no feature snapshot as of {day} (datasets/ranker/{day - timedelta(days=1)}/snapshot/)")
    return found


def ceiling(settings: Settings, day: date, sim: simulate.Simulator) -> dict:
    """The day's training set with labels from the hidden utility instead of clicks, same features and recipe."""
    import lightgbm as lgb

    store = ObjectStore.from_settings(settings)
    names = [features.column(n) for n in features.FEATURE_NAMES]
    split = {s: _split(store, settings, day, s, ["request_id", "user_id", "item_id", "position", *names])
             for s in ("train", "valid")}

    def dataset(cols: dict, reference=None):
        grade = np.clip(np.floor(_gains(cols, sim) * 5), 0, 4)
        return lgb.Dataset(np.column_stack([cols[n] for n in names]).astype(np.float32), label=grade,
                           group=train.group_sizes(_chunked(cols["request_id"])), reference=reference,
                           categorical_feature=[i for i, f in enumerate(features.FEATURES) if f.kind == "categorical"],
                           params={"max_bin": settings.train.max_bin, "verbosity": -1})

    dtrain = dataset(split["train"])
    params = {**train.lgb_params(settings.train, "lambdarank"), "metric": "ndcg", "eval_at": [10]}
    booster = lgb.train(params, dtrain, num_boost_round=settings.train.num_boost_round,
                        valid_sets=[dataset(split["valid"], reference=dtrain)],
                        callbacks=[lgb.early_stopping(settings.train.early_stopping_rounds, verbose=False)])
    manifest = features.manifest(settings.events.tenants, objective="lambdarank")
    scored = _on_pools(settings, day, sim, {"ceiling": (booster.model_to_string(), manifest)})
    return {"day": day.isoformat(), "lists": scored.lists, "ndcg": scored.ndcg["ceiling"],
            "rounds": booster.best_iteration}


def _split(store: ObjectStore, settings: Settings, day: date, split: str, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = f"{lake.dataset_prefix(day)}split={split}/"
    keys = sorted(k for k in store.list_keys(settings.s3.lake_bucket, prefix) if k.endswith(".parquet"))
    table = pa.concat_tables([pq.read_table(io.BytesIO(store.get(settings.s3.lake_bucket, k).body), columns=columns)
                              for k in keys])
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _gains(cols: dict[str, np.ndarray], sim: simulate.Simulator) -> np.ndarray:
    users = np.fromiter((sim.ids.user_index[u] for u in cols["user_id"]), dtype=np.int64, count=len(cols["user_id"]))
    items = np.fromiter((sim.ids.item_index[i] for i in cols["item_id"]), dtype=np.int64, count=len(cols["item_id"]))
    out = np.empty(len(users))
    for u in np.unique(users):
        rows = users == u
        out[rows] = simulate.true_gain(sim.world, int(u), items[rows])
    return out


def _chunked(values: np.ndarray):
    import pyarrow as pa

    return pa.chunked_array([pa.array(values)])


def summarize(rows: list[dict], extra: dict) -> dict:
    audits = [r["audit"] for r in rows if r.get("audit") and r["audit"].get("agreement")]
    clear = [a for a in audits if a["agreement"] in ("agree", "disagree")]
    served = [r["stats"] for r in rows if r["stats"]["lists"]]
    last = served[-LAST_DAYS:]
    lists = sum(loop_table.judged(s) for s in last)
    effects = served_effects(rows)
    refits = extra.get("refits") or []
    ceiling = extra["ceiling"]
    final = rows[-1].get("audit") or {}  # its champion is the version that served the ceiling's held-out day
    return {
        "clear_days": len(clear), "agree": sum(a["agreement"] == "agree" for a in clear),
        "promoted": sum(bool((r["retrain"].get("flip") or {}).get("flipped")) for r in rows),
        "served_ndcg_last7": sum(s["ndcg_sum"] for s in last) / lists,
        "legacy_ndcg_last7": sum(s["legacy_ndcg_sum"] for s in last) / lists,
        "worst_promotion_delta": min((p["pool_delta"] for p in extra.get("promotions") or []), default=None),
        "worst_served_change": min((e["delta"] - e["legacy_delta"] for e in effects), default=None),
        "refit_minus_twin_mean": float(np.mean([r["delta"] for r in refits])) if refits else None,
        "ceiling": ceiling["ndcg"], "ceiling_served": final.get("champion_ndcg"), "served_version": final.get("champion"),
        "reference": (extra.get("reference") or {}).get("pool_ndcg@10", {}).get("reference"),
    }


def print_seed(result: dict) -> None:
    print(f"\n== seed {result['seed']}: {len(result['table'])} days in {result['seconds']:.0f}s")
    for line in loop_table.table(result["table"]):
        print("   " + line)
    for p in result["promotions"]:
        print(f"   promotion {p['day']} ({p['new']} replaces {p['old']}): on {p['served_day']}'s {p['lists']} candidate "
              f"pools {p['pool_new']:.3f} vs {p['pool_old']:.3f} ({p['pool_delta']:+.3f}); served NDCG@10 "
              f"{p['served_before']:.3f} -> {p['served_after']:.3f} ({p['delta']:+.3f}; legacy on the same requests "
              f"{p['legacy_delta']:+.3f})")
    for r in result.get("refits") or []:
        print(f"   refit serving {r['day']}: {r['refit_ndcg']:.3f} vs its evaluated twin {r['twin_ndcg']:.3f} "
              f"({r['delta']:+.3f}, {r['lists']} lists)")
    c = result["ceiling"]
    print(f"   ceiling (training set of {c['day']} relabelled with the hidden utility): {c['ndcg']:.3f} on the held-out "
          f"day's {c['lists']} candidate pools; the model that served it ({result['summary']['served_version']}) "
          f"{_plain(result['summary']['ceiling_served'])}")
    if result.get("challengers"):
        print("   earlier champions challenging each of the last days' champion (bench/challengers.py):")
        challengers.print_rows(result["challengers"], prefix="   ")
    if result.get("reference"):
        on_pools = ", ".join(f"{name} {value:.3f}" for name, value in result["reference"]["pool_ndcg@10"].items())
        print(f"   hand-built reference (bench/reference.py) on {result['reference']['day']}'s "
              f"{result['reference']['pools']} candidate pools: {on_pools}")


def print_summary(results: list[dict], days: int, out: Path, traffic: dict | None) -> None:
    print(f"\n== {len(results)} seeds x {days} days; " + (
        f"{traffic['events_per_day']:,} events a day from {traffic['users']:,} users, exploration share "
        f"{traffic['exploration_share']}" if traffic else "traffic not recorded"))
    print(f"{'seed':>5}  {'clear days':>10}  {'gate agrees':>11}  {'promoted':>8}  {'served GT last 7':>16}  "
          f"{'legacy':>6}  {'worst promotion':>15}  {'worst served change':>19}  {'ceiling':>7}  {'served, same pools':>18}  "
          f"{'reference':>9}")
    for r in results:
        s = r["summary"]
        print(f"{r['seed']:>5}  {s['clear_days']:>10}  {s['agree']:>11}  {s['promoted']:>8}  "
              f"{s['served_ndcg_last7']:>16.3f}  {s['legacy_ndcg_last7']:>6.3f}  {_num(s['worst_promotion_delta']):>15}  "
              f"{_num(s['worst_served_change']):>19}  {s['ceiling']:>7.3f}  {_plain(s['ceiling_served']):>18}  "
              f"{_plain(s.get('reference')):>9}")
    clear = sum(r["summary"]["clear_days"] for r in results)
    agree = sum(r["summary"]["agree"] for r in results)
    print(f"gate agrees with the ground truth on {agree} of {clear} clear days"
          + (f" ({agree / clear:.0%})" if clear else "") + f"; results in {out}")
    judged = [row for r in results for row in r.get("estimates") or []]
    if judged:
        print("the gate's estimate and its variants against the truth, all seeds (bench/estimates.py):")
        estimates.print_summary(estimates.summary(judged))
    rivals = [row for r in results for row in r.get("challengers") or []]
    if rivals:
        print("earlier champions as challengers, all seeds: " + challengers.summary_line(rivals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop.json")
    parser.add_argument("--report", type=Path, help="print the tables of a saved run instead of running")
    parser.add_argument("--events-per-day", type=int,
                        help="the simulated traffic (simulate.events_per_day; default: configured, ~1,280 requests)")
    parser.add_argument("--estimates", action="store_true",
                        help="also judge every day's pairs with bench/estimates.py's variants of the gate's estimate")
    parser.add_argument("--summarize", action="store_true",
                        help="do not run the loops: audit each seed's finished loop again on its kept stack")
    parser.add_argument("--kafka-storage", choices=["memory", "s3"], default="memory",
                        help="the embedded broker's log (stack.kafka_storage). memory: Tansu 0.6.0's s3 engine "
                             "lists every batch object of a partition on each fetch, so its reads slow as the log "
                             "grows and stall on busy cores (bench/broker.py); weeks of this traffic grow it far")
    args = parser.parse_args()
    os.environ["FEEDLOOP_STACK__KAFKA_STORAGE"] = args.kafka_storage
    if args.events_per_day:
        os.environ["FEEDLOOP_SIMULATE__EVENTS_PER_DAY"] = str(args.events_per_day)
    if args.report:
        saved = json.loads(args.report.read_text())
        for result in saved["results"]:
            result["summary"] = summarize(result["table"], result)
            print_seed(result)
        print_summary(saved["results"], saved["days"], args.report, saved.get("world"))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    # `kill` (SIGTERM) ends the run like Ctrl-C: run_seed's `finally` stops the seed's stack, which
    # otherwise keeps its Airflow, Kafka, S3 and pods running on the default ports
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for seed in seeds:
        state = ROOT / ".feedloop-bench" / f"loop-{seed}"
        results.append(summarize_kept(seed, state, with_estimates=args.estimates) if args.summarize
                       else run_seed(seed, args.days, state, with_estimates=args.estimates))
        print_seed(results[-1])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"days": args.days, "seeds": seeds, "world": world(),
                                        "kafka_storage": args.kafka_storage,
                                        "load_average": os.getloadavg(), "results": results}, indent=2, default=str))
    print_summary(results, args.days, args.out, world())


def world() -> dict:
    """The traffic the gate had to judge from: what its agreement depends on (docs/measurements.md)."""
    settings = load_settings()
    return {"events_per_day": settings.simulate.events_per_day, "users": settings.simulate.users,
            "exploration_share": settings.serving.exploration_share}


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
