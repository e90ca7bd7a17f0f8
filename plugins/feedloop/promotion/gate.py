"""The promotion gate: absolute floors AND no regression against the champion, measured without bias.

Why pure and explicit (TFX Evaluator's "blessing"): the decision must be reproducible from the
numbers in metrics.json, and an operator must see every number behind it. Every check is kept,
passed or not, so the report can show the whole table and the alert can name what failed.

Why the comparison uses the exploration lists (plain metrics; or, with too few of them, the debiased
snips-ipw metrics on all lists) and their paired bootstrap interval: the holdout's other lists were
chosen and ranked by the champion, and metrics on one's own logs favour the logger
(feedloop.training.counterfactual). The difference candidate - champion on the same lists decides:
its interval's lower bound above -tolerance: "not worse" (not worse beyond the tolerance, with
confidence), or "better" when that bound is above 0 too; its upper bound below -tolerance:
"worse"; otherwise "inconclusive" (too little support to tell), handled by `inconclusive` (hold |
approve: a human decides | promote). Both "better" and "not worse" pass; overall, "not worse" also
needs the estimate itself to reach `min_gain`, else the verdict is "no gain" and the champion stays.
Overall, with `tolerance_widths` > 0, the tolerance is at most that many half-widths of the interval
(`narrowed`): a narrow interval can tell a worse model, and the tolerance must not let it through.

Why `min_gain` (0 = off, the default): a team may not want to switch models for a gain the
estimate cannot show. Measured against the simulator's truth on whole candidate pools, click-based
estimates are compressed (clicks are a noisy view of relevance), so a threshold on them costs better
candidates too (bench/loop.py, docs/measurements.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from feedloop.contract.decisions import Check, Comparison, GateDecision
from feedloop.training.counterfactual import ESTIMATORS, gated_estimate

INCONCLUSIVE = ("hold", "approve", "promote")
PASSING = ("better", "not worse")  # verdicts of a comparison that lets the candidate through


@dataclass(frozen=True)
class Thresholds:
    floors: Mapping[str, float]               # candidate overall raw metric >= floor, e.g. {"auc": 0.6}
    compare: tuple[str, ...] = ("ndcg@10",)   # debiased metrics compared with the champion (first = headline)
    tolerance: float = 0.005                   # overall: the difference's bound against -tolerance
    tolerance_widths: float = 0.0              # > 0: overall, at most this many half-widths of the interval
    segment_tolerance: float = 0.02            # per segment (smaller samples, more noise)
    min_support: int = 50                      # fewer judged lists: not judged (segments) / inconclusive (overall)
    min_gain: float = 0.0                      # > 0: overall "not worse" also needs the estimate (diff) >= this
    parity_max_abs_diff: float = 1e-5
    inconclusive: str = "hold"                 # overall verdict inconclusive: hold | approve | promote

    def __post_init__(self) -> None:
        if self.inconclusive not in INCONCLUSIVE:
            raise ValueError(f"inconclusive must be one of {', '.join(INCONCLUSIVE)}, got {self.inconclusive!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "floors": dict(self.floors), "compare": list(self.compare)}


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, thresholds: Thresholds, *,
           paired: Mapping[str, Any] | None = None) -> GateDecision:
    """Gate one candidate.

    candidate: {"version", "overall": {metric: value, "groups": n} (raw, for the floors), "segments",
    "debiased": {"overall": {"lists", metric: {"value", ...}}, ...}, "parity": {"max_abs_diff", "rows"}};
    champion: {"version", "debiased": ...} scored on the same rows, or None for the first model (floors
    and parity only); paired: the evaluation's candidate - champion differences ({"confidence", "gated":
    the estimate block compared ("explore" | "debiased", default "debiased"), "judged_on": why, and per
    block {"overall": {"lists", metric: {"value", "low", "high"}}, "segments": {...}}}), required with a
    scorable champion; candidate and champion carry the same blocks. A missing parity figure never passes,
    nor does a champion that could not be
    scored on these rows ({"unscorable": why}: its feature set differs).
    """
    checks = [_parity(candidate.get("parity"), thresholds.parity_max_abs_diff)]
    overall = candidate["overall"]
    for metric, floor in sorted(thresholds.floors.items()):
        value = overall.get(metric)
        checks.append(Check("floor", "overall", metric, value, floor, value is not None and value >= floor,
                            support=overall.get("groups")))
    headline = thresholds.compare[0]
    est = gated_estimate(paired)
    if est not in ESTIMATORS:
        raise ValueError(f"paired 'gated' must be one of {', '.join(ESTIMATORS)}, got {est!r}")
    estimator = ESTIMATORS[est]
    own = _value(candidate.get(est, {}).get("overall"), headline)
    own_lists = int((candidate.get(est, {}).get("overall") or {}).get("lists") or 0)
    comparison = Comparison(headline, estimator, own, None, None, None, None, own_lists, "no champion")
    if champion is not None and champion.get("unscorable"):
        checks.append(Check("comparable", "overall", "champion", None, None, False, note=champion["unscorable"]))
        comparison = Comparison(headline, estimator, own, None, None, None, None, own_lists, "not comparable")
    elif champion is not None:
        if paired is None:
            raise ValueError("a champion scored on these rows needs the paired differences (evaluation 'paired')")
        compared = _comparisons("overall", candidate[est]["overall"], champion[est]["overall"],
                                paired[est]["overall"], thresholds, thresholds.tolerance,
                                paired.get("confidence"), estimator, judged_on=paired.get("judged_on"),
                                widths=thresholds.tolerance_widths)
        checks += compared
        for scope in sorted(paired[est]["segments"]):
            diffs = paired[est]["segments"][scope]
            if (diffs.get("lists") or 0) < thresholds.min_support:
                continue
            checks += _comparisons(scope, candidate[est]["segments"].get(scope),
                                   champion[est]["segments"].get(scope), diffs, thresholds,
                                   thresholds.segment_tolerance, paired.get("confidence"), estimator)
        decisive = next((c for verdict in ("worse", "inconclusive", "no gain") for c in compared
                         if c.verdict == verdict), compared[0])
        comparison = Comparison(decisive.metric, estimator, decisive.candidate, decisive.champion, decisive.diff,
                                decisive.low, decisive.high, decisive.support or 0, decisive.verdict)
    promotable = all(c.passed for c in checks)
    return GateDecision(promotable=promotable, candidate=candidate.get("version"),
                        champion=None if champion is None else champion.get("version"),
                        thresholds=thresholds.to_dict(), checks=tuple(checks), comparison=comparison,
                        asks_approval=promotable and comparison.verdict == "inconclusive"
                        and thresholds.inconclusive == "approve")


def _parity(parity: Mapping[str, Any] | None, limit: float) -> Check:
    """The scaled difference (export.scaled_diff); a figure staged before it existed is the absolute one."""
    diff = None if parity is None else parity.get("max_scaled_diff", parity.get("max_abs_diff"))
    rows = 0 if parity is None else parity.get("rows", 0)
    passed = diff is not None and rows > 0 and diff <= limit
    note = (f"{rows} holdout rows; |onnx - lightgbm| / max(1, |lightgbm|)" if diff is not None
            else "no parity figure: the export failed or was not checked")
    return Check("parity", "overall", "max_scaled_diff", diff, limit, passed, note=note)


def _comparisons(scope: str, cand: Mapping[str, Any] | None, champ: Mapping[str, Any] | None,
                 diffs: Mapping[str, Any], thresholds: Thresholds, tolerance: float,
                 confidence: float | None, estimator: str, judged_on: str | None = None,
                 widths: float = 0.0) -> list[Check]:
    """One check per compared metric. Overall, an inconclusive verdict passes only when the policy says so;
    in a segment it never blocks (a segment's own small sample must not hold the whole candidate).
    judged_on: which lists the evaluation compared on (counterfactual.choose_estimate), in the overall note.
    widths > 0: the tolerance is at most that many half-widths of the metric's interval (`narrowed`)."""
    out = []
    lists = int(diffs.get("lists") or 0)
    for metric in thresholds.compare:
        d = diffs.get(metric) or {}
        diff, low, high = d.get("value"), d.get("low"), d.get("high")
        tol = narrowed(tolerance, widths, low, high)
        if None in (diff, low, high) or lists < thresholds.min_support:
            verdict = "inconclusive"
        elif low > 0:
            verdict = "better"
        elif low >= -tol:  # >=: a model identical to the champion (interval [0, 0]) is not worse
            short = scope == "overall" and thresholds.min_gain > 0 and diff < thresholds.min_gain
            verdict = "no gain" if short else "not worse"
        elif high < -tol:
            verdict = "worse"
        else:
            verdict = "inconclusive"
        if scope != "overall":
            passed, note = verdict != "worse", "a segment's inconclusive verdict does not hold the candidate"
        else:
            passed = verdict in PASSING or (verdict == "inconclusive" and thresholds.inconclusive != "hold")
            note = {"hold": "promotion.inconclusive = hold keeps the champion",
                    "approve": "promotion.inconclusive = approve: a human approves or rejects the flip",
                    "promote": "promotion.inconclusive = promote: promoted without a verdict"}[thresholds.inconclusive]
            if lists < thresholds.min_support:
                note = f"fewer than min_support {thresholds.min_support} judged lists; {note}"
        if verdict == "no gain":
            note = (f"the estimate {diff:+.4f} is below promotion.min_gain {thresholds.min_gain:g}: not worse, "
                    "not better either; the champion stays")
        note = note if verdict in ("inconclusive", "no gain") else ""
        if tol < tolerance:
            note = "; ".join(filter(None, [f"tolerance {tol:.4f}: {widths:g} half-widths of the interval "
                                           f"(promotion.tolerance {tolerance:g} caps it)", note]))
        if judged_on:
            note = f"on {judged_on}; {note}" if note else f"on {judged_on}"
        out.append(Check("comparison", scope, metric, _value(cand, metric), -tol, passed,
                         champion=_value(champ, metric), support=lists, note=note,
                         diff=diff, low=low, high=high, verdict=verdict, estimator=estimator, confidence=confidence))
    return out


def narrowed(tolerance: float, widths: float, low: float | None, high: float | None) -> float:
    """The tolerance a comparison is judged with: at most `widths` half-widths of its interval (0 = off).

    Why: the tolerance lets the fresher model through when the evidence cannot tell it from the champion.
    Where the interval is narrow (much traffic), the evidence can tell: a tolerance wider than the interval
    then only passes models the interval shows to be worse. The click-based estimate is a compressed view
    of the truth (about a quarter of the difference on whole candidate pools), so at ten thousand requests
    a day the configured 0.025 passed earlier champions 0.011-0.046 behind in truth (bench/challengers.py)."""
    if widths <= 0 or low is None or high is None:
        return tolerance
    return min(tolerance, widths * (high - low) / 2)


def _value(block: Mapping[str, Any] | None, metric: str) -> float | None:
    return ((block or {}).get(metric) or {}).get("value")
