"""The gate's other side: would it hold a worse model? Earlier champions challenge each day's champion.

Why: in a closed loop each day's candidate is trained on more and fresher data than its champion, so
nearly every clear decision is a better candidate to promote (bench/loop.py at eight times the traffic:
3 clear days of 20, all better). That says nothing of a worse candidate: a bad training day, a broken
feature, a regressed recipe. Here the loop's own earlier champions play it: on each day D, the version that
was live at the end of D - gap (never trained on D) is judged against D's champion exactly as the gate
judges a candidate (feedloop.promotion.steps.judge on D's holdout, gate.decide with the configured
thresholds), and both rank D's whole candidate pools for the truth (the simulator's hidden utility).
Agreement is counted as bench/loop.py counts it: pass a challenger the truth puts 0.01 or more ahead,
hold one it puts 0.01 or more behind.

    FEEDLOOP_STATE_DIR=<a loop's state> .venv/bin/python bench/challengers.py --ground-truth <state>/ground_truth.json

It needs the stack of a closed loop that is running or was brought back up (`make up` with the same
state dir): its lake, registry, pointer history and kept candidate pools. bench/loop.py runs it on each
seed's last days. Writes bench/results/challengers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from feedloop.core import layout as lake  # noqa: E402
from feedloop.core.config import Settings, load_settings  # noqa: E402
from feedloop.core.storage import ObjectStore  # noqa: E402
from feedloop.ops import audit, loop_audit  # noqa: E402
from feedloop.ops.simulate import Ids, World  # noqa: E402
from feedloop.ops.simulate.pools import DayPools, path_for  # noqa: E402
from feedloop.promotion import gate, steps  # noqa: E402
from feedloop.promotion.candidate import feature_matrix, feature_names, holdout  # noqa: E402
from feedloop.promotion.registry import Registry  # noqa: E402

GAPS = (2, 4, 7, 10, 14)  # days between a challenger's last live day and the day it challenges
TOLERANCES = (0.01, 0.005, 0.0)  # fixed promotion.tolerance values judged beside the configured rule, same intervals


def challenge_day(settings: Settings, store: ObjectStore, registry: Registry, world: World, ids: Ids, day: date,
                  gaps: tuple[int, ...] = GAPS) -> list[dict]:
    """The day's champion against each distinct earlier champion: the gate's verdict and the truth."""
    import lightgbm as lgb

    champion = registry.champion_of(day)
    if champion is None:
        return []
    rivals = {}
    for gap in gaps:
        version = registry.champion_of(day - timedelta(days=gap))
        if version and version != champion and version not in rivals.values():
            rivals[gap] = version
    if not rivals:
        return []
    models = {v: (registry.read(v, "model.txt").decode(), registry.manifest(v)["feature_manifest"])
              for v in [champion, *rivals.values()]}
    cfg = settings.promotion
    columns = holdout(store, settings.s3.lake_bucket, lake.dataset_prefix(day),
                      feature_names(models[champion][1]), segments=tuple(cfg.segments))
    scores = {v: lgb.Booster(model_str=text).predict(feature_matrix(columns, manifest, what=v))
              for v, (text, manifest) in models.items()}
    truth = loop_audit.pool_ground_truth(store=store, settings=settings, day=day, world=world, ids=ids,
                                         pools=DayPools.load(path_for(settings.state_path, str(day))), models=models)
    if truth is None:
        raise FileNotFoundError(f"no candidate pools or feature snapshot for {day}: is this a closed loop's stack?")
    limits = steps.thresholds(settings=settings)
    rules = {"configured": limits, **{f"{tol:g} fixed": replace(limits, tolerance=tol, tolerance_widths=0.0)
                                      for tol in dict.fromkeys([limits.tolerance, *TOLERANCES])}}
    out = []
    for gap, version in rivals.items():
        blocks, paired = steps.judge(columns, {"candidate": scores[version], "champion": scores[champion]}, cfg)
        challenger = {**steps.gated(blocks["candidate"], version),
                      "parity": {"max_abs_diff": 0.0, "rows": 1}}  # it passed parity when it was registered
        decisions = {rule: gate.decide(challenger, {"version": champion, **blocks["champion"]}, thresholds,
                                       paired=paired)
                     for rule, thresholds in rules.items()}
        decision = decisions["configured"]
        c = decision.comparison
        gt_rival, gt_champion = truth.ndcg[version], truth.ndcg[champion]
        out.append({"day": day.isoformat(), "champion": champion, "challenger": version, "gap": gap,
                    "lists": truth.lists, "gt_challenger": gt_rival, "gt_champion": gt_champion,
                    "gt_diff": gt_rival - gt_champion, "estimate": c.diff, "low": c.low, "high": c.high,
                    "support": c.lists, "verdict": c.verdict, "passed": decision.promotable,
                    "passed_at": {rule: d.promotable for rule, d in decisions.items()},
                    "agreement": audit.agreement(promoted=decision.promotable, candidate=gt_rival,
                                                 champion=gt_champion)})
    return out


def summary(rows: list[dict]) -> dict:
    """Agreement on clear pairs, the worse challengers held, and the worst truth a passed challenger had."""
    clear = [r for r in rows if r["agreement"] in ("agree", "disagree")]
    worse = [r for r in clear if r["gt_diff"] < 0]
    better = [r for r in clear if r["gt_diff"] > 0]
    passed = [r["gt_diff"] for r in rows if r["passed"]]
    return {"pairs": len(rows), "clear": len(clear), "agree": sum(r["agreement"] == "agree" for r in clear),
            "worse": len(worse), "worse_held": sum(not r["passed"] for r in worse),
            "better": len(better), "better_passed": sum(r["passed"] for r in better),
            "worst_passed_gt_diff": min(passed, default=None),
            "passed_worse_by_0.02": sum(d <= -0.02 for d in passed),
            "agree_at": {rule: sum(audit.agreement(promoted=r["passed_at"][rule], candidate=r["gt_challenger"],
                                                   champion=r["gt_champion"]) == "agree" for r in clear)
                         for rule in (rows[0]["passed_at"] if rows else {})}}


def print_rows(rows: list[dict], prefix: str = "") -> None:
    print(f"{prefix}{'day':<10} {'gap':>3} {'GT chall':>8} {'GT champ':>8} {'GT diff':>8} "
          f"{'estimate [interval]':>27} {'verdict':<12} {'gate':<6} truth")
    for r in rows:
        est = ("-" if r["estimate"] is None else
               f"{r['estimate']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]")
        print(f"{prefix}{r['day']:<10} {r['gap']:>3} {r['gt_challenger']:>8.3f} {r['gt_champion']:>8.3f} "
              f"{r['gt_diff']:>+8.3f} {est:>27} {r['verdict']:<12} {'pass' if r['passed'] else 'hold':<6} "
              f"{r['agreement']}")
    print(prefix + summary_line(rows))


def summary_line(rows: list[dict]) -> str:
    s = summary(rows)
    at = ", ".join(f"{rule}: {n}" for rule, n in s["agree_at"].items())
    return (f"clear pairs {s['clear']} of {s['pairs']}: gate agrees on {s['agree']}; worse challengers held "
            f"{s['worse_held']} of {s['worse']}; better ones passed {s['better_passed']} of {s['better']}; the worst "
            f"passed challenger {_plain(s['worst_passed_gt_diff'])} in truth ({s['passed_worse_by_0.02']} passed "
            f"0.02 or more behind); agreement by tolerance rule on the same intervals: {at}")


def _plain(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def main() -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day", type=date.fromisoformat, action="append",
                        help="a day to challenge (repeatable; default: the last --days days with pools)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--ground-truth", type=Path, default=settings.state_path / "ground_truth.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "challengers.json")
    args = parser.parse_args()
    if not args.ground_truth.exists():
        sys.exit(f"no ground truth at {args.ground_truth}: run a closed loop first (make demo), or pass --ground-truth")
    world = World.load(args.ground_truth)
    store, registry = ObjectStore.from_settings(settings), Registry.from_settings(settings)
    days = args.day or pool_days(settings, store)[-args.days:]
    ids = Ids(world)
    rows = [r for day in days for r in challenge_day(settings, store, registry, world, ids, day)]
    print_rows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"days": [str(d) for d in days], "rows": rows, "summary": summary(rows)},
                                   indent=2, default=float))
    print(f"written {args.out}")


def pool_days(settings: Settings, store: ObjectStore) -> list[date]:
    """Days whose candidate pools the simulator kept and whose training set exists (a retrain ran for them)."""
    found = sorted(date.fromisoformat(p.stem) for p in (settings.state_path / "pools").glob("*.npz"))
    return [d for d in found if store.list_keys(settings.s3.lake_bucket, lake.dataset_prefix(d) + "split=holdout/")]


if __name__ == "__main__":
    main()
