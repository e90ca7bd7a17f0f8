"""The closed loop's per-day table: what was served, what the retrain decided, and what the truth says.

Rows are plain JSON-able dicts (they are saved with the demo's state and its table JSON):
{"day", "stats": simulate.DayStats fields, "retrain": the day's run (tasks; evaluate / gate / flip
outputs), "audit": loop_audit.DayAudit fields or None}. Everything shown is read from structured
fields: the gate's comparison entry, the flip result, the audit; no rendered text is parsed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from feedloop.ops import simulate
from feedloop.ops.learning_curve import CurveDay

NA = "n/a"


def decision(retrain: Mapping[str, Any]) -> str:
    """What the day's run did with its candidate, in a word or three."""
    tasks = retrain["tasks"]
    if tasks.get("build_dataset") == "skipped":
        return "no training yet"
    if "evaluate" not in retrain:
        failed = [t for t, s in tasks.items() if s == "failed"]
        return f"failed at {', '.join(failed) or '?'}"
    flip = retrain.get("flip") or {}
    if flip.get("flipped"):
        return "PROMOTED"
    if flip.get("canary"):
        return "canary"
    if flip.get("held_back"):
        return "held back"
    return "kept live" if flip else "held"


def gate_estimate(retrain: Mapping[str, Any]) -> tuple[str, str]:
    """The gate's debiased comparison (candidate - champion, its interval) and its verdict, or n/a."""
    comparison = (retrain.get("gate") or {}).get("comparison")
    if not comparison:
        return NA, NA
    diff, low, high = comparison.get("diff"), comparison.get("low"), comparison.get("high")
    shown = NA if diff is None else f"{diff:+.3f}" + ("" if low is None or high is None
                                                       else f" [{low:+.3f}, {high:+.3f}]")
    return shown, comparison.get("verdict") or NA


def outcome(retrain: Mapping[str, Any]) -> str:
    """One line for the day's run as the demo goes: candidate, its holdout figures, the gate, the decision."""
    if "evaluate" not in retrain:
        what = decision(retrain)
        hint = (" (< dataset.min_window_days days of data)" if what == "no training yet"
                else " (see the task log in the Airflow UI)")
        return f"{retrain['run']}: {what}{hint}"
    ev = retrain["evaluate"]
    estimate, verdict = gate_estimate(retrain)
    comparison = (retrain.get("gate") or {}).get("comparison")
    gate = f"{comparison['estimator']} {comparison['metric']} {estimate} {verdict}" if comparison else NA
    return (f"{ev['version']}  holdout AUC {ev['overall']['auc']:.3f}  NDCG@10 {ev['overall']['ndcg@10']:.3f}"
            f"  gate estimate: {gate}  -> {decision(retrain)}")


def table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-day lines, then what the columns mean."""
    width = max([len(", ".join(r["stats"]["by_version"])) for r in rows] + [12])
    cand_width = max([len(r["audit"]["candidate"]) for r in rows if r.get("audit")] + [9])
    arms = any(r["stats"].get("arms") for r in rows)
    lines = [f"{'day':<10}  {'model live (serving)':<{width}}  {'feeds':>6}  {'CTR':>6}  {'NDCG@10':>7}  "
             f"{'legacy*':>7}  " + (f"{simulate.ARM_HEAD}  " if arms else "")
             + f"{'candidate':<{cand_width}}  {'decision':<15}  {'GT cand':>7}  {'GT champ':>8}  "
             f"{'gate estimate [interval]':<24}  {'verdict':<12}  truth"]
    for r in rows:
        s, audit = r["stats"], r.get("audit") or {}
        estimate, verdict = gate_estimate(r["retrain"])
        lines.append(
            f"{r['day']:<10}  {', '.join(s['by_version']):<{width}}  {s['lists']:>6,}  {s['ctr']:>6.3f}  "
            f"{s['ndcg']:>7.3f}  {s['legacy_ndcg']:>7.3f}  "
            + (f"{simulate.arm_columns(s.get('arms') or {})}  " if arms else "")
            + f"{audit.get('candidate', '-'):<{cand_width}}  "
            f"{decision(r['retrain']):<15}  {num(audit.get('candidate_ndcg')):>7}  "
            f"{num(audit.get('champion_ndcg')):>8}  {estimate:<24}  {verdict:<12}  {audit.get('agreement') or NA}")
    lines += ([simulate.ARM_NOTE] if arms else []) + [
        "CTR = clicks / impressions shown; NDCG@10 = ground truth (hidden utility) of what was served, over the best "
        "10 of each request's candidate pool; legacy* = the legacy policy's on the same requests",
        "GT cand / GT champ = ground-truth NDCG@10 of the top 10 the day's candidate / its champion picks from each "
        "of the day's candidate pools (what it would have served), as NDCG@10; gate estimate = the gate's debiased "
        "candidate - champion NDCG@10 [interval] and verdict; truth = the gate's decision vs GT cand - GT champ "
        "(agree / disagree; level within 0.01)",
    ]
    return lines


def summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """Legacy days vs model-served days, pooled."""
    legacy = [r["stats"] for r in rows if set(r["stats"]["by_version"]) == {simulate.LEGACY}]
    served = [r["stats"] for r in rows if simulate.LEGACY not in r["stats"]["by_version"]]
    if not legacy or not served:
        return (f"{len(legacy)} legacy day(s), {len(served)} model-served day(s): "
                "no comparison (a model goes live after dataset.min_window_days days)")

    def pooled(days: list[Mapping[str, Any]]) -> tuple[float, float, float]:
        lists, imps = sum(judged(s) for s in days), sum(s["impressions"] for s in days)
        return (sum(s["clicks"] for s in days) / imps, sum(s["ndcg_sum"] for s in days) / lists,
                sum(s["legacy_ndcg_sum"] for s in days) / lists)

    (l_ctr, l_ndcg, _), (m_ctr, m_ndcg, m_legacy) = pooled(legacy), pooled(served)
    return (f"legacy policy ({len(legacy)} days): CTR {l_ctr:.3f}, NDCG@10 {l_ndcg:.3f}  |  model-served "
            f"({len(served)} days): CTR {m_ctr:.3f} ({m_ctr / l_ctr - 1:+.0%}), NDCG@10 {m_ndcg:.3f} "
            f"({m_ndcg / l_ndcg - 1:+.0%}); on those same requests the legacy policy scores NDCG@10 {m_legacy:.3f}")


def agreement_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """How often the gate's decision matched the ground truth, over the days it decided against a champion."""
    marks = [r["audit"]["agreement"] for r in rows if r.get("audit") and r["audit"]["agreement"]]
    if not marks:
        return "gate vs ground truth: no decision against a champion yet"
    counts = {m: marks.count(m) for m in ("agree", "disagree", "level")}
    return f"gate vs ground truth over {len(marks)} decision(s): " + ", ".join(f"{n} {m}" for m, n in counts.items())


def curve_days(rows: Sequence[Mapping[str, Any]]) -> list[CurveDay]:
    """The learning curve's points: served and legacy NDCG@10 per day, the version each day's run made live."""
    return [CurveDay(day=r["day"], served=r["stats"]["ndcg"], legacy=r["stats"]["legacy_ndcg"],
                     promoted=(r["retrain"].get("flip") or {}).get("version")
                     if (r["retrain"].get("flip") or {}).get("flipped") else None)
            for r in rows]


def num(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}"


def judged(stats: Mapping[str, Any]) -> int:
    """The day's lists judged in their candidate pools (all of them, unless /recommend served some)."""
    return stats.get("judged", stats["lists"])
