"""gate.decide on hand-built metrics: every check, its numbers and the line an operator reads.

Floors and parity on the raw overall metrics; the comparison with the champion on the debiased
(snips-ipw) metrics by the paired interval of candidate - champion.
"""

from __future__ import annotations

import pytest

from feedloop.promotion.gate import Thresholds, decide

T = Thresholds(floors={"auc": 0.6, "ndcg@10": 0.3}, compare=("ndcg@10",), tolerance=0.005,
               segment_tolerance=0.02, min_support=50, parity_max_abs_diff=1e-5)
PARITY = {"max_abs_diff": 2e-6, "rows": 500}
COMPARISON_KEYS = {"metric", "estimator", "candidate", "champion", "diff", "low", "high", "lists", "verdict"}


def _debiased(overall: float, lists: int = 400, **segments: tuple[float, int]) -> dict:
    def scope(value, n):
        return {"lists": n, "ndcg@10": {"value": value, "low": value - 0.02, "high": value + 0.02}}

    return {"overall": scope(overall, lists),
            "segments": {k.replace("__", "="): scope(v, n) for k, (v, n) in segments.items()}}


def cand(auc=0.70, ndcg=0.45, debiased=None, groups=400):
    return {"version": "2026-11-05-cand", "parity": PARITY, "overall": {"auc": auc, "ndcg@10": ndcg, "groups": groups},
            "segments": {}, "debiased": debiased or _debiased(0.52)}


def champ(debiased=None):
    return {"version": "2026-11-04-champ", "overall": {"auc": 0.75, "ndcg@10": 0.60, "groups": 400}, "segments": {},
            "debiased": debiased or _debiased(0.50)}


def paired(diff, low, high, lists=400, **segments: tuple[float, float, float, int]):
    def scope(d, lo, hi, n):
        return {"lists": n, "ndcg@10": {"value": d, "low": lo, "high": hi}}

    return {"confidence": 0.95, "debiased": {"overall": scope(diff, low, high, lists),
                                             "segments": {k.replace("__", "="): scope(*v) for k, v in segments.items()}}}


def test_first_model_needs_the_floors_only():
    d = decide(cand(0.61, 0.31), None, T)
    assert d.promotable and d.champion is None
    assert [(c.kind, c.metric, c.candidate, c.limit, c.passed) for c in d.checks] == [
        ("parity", "max_scaled_diff", 2e-6, 1e-5, True), ("floor", "auc", 0.61, 0.6, True),
        ("floor", "ndcg@10", 0.31, 0.3, True)]
    assert d.summary() == "candidate 2026-11-05-cand passes the gate against the floors (first model) (3 checks)"
    assert d.to_dict()["comparison"] == {"metric": "ndcg@10", "estimator": "snips-ipw", "candidate": 0.52,
                                         "champion": None, "diff": None, "low": None, "high": None, "lists": 400,
                                         "verdict": "no champion"}


def test_a_floor_blocks_the_first_model():
    d = decide(cand(0.61, 0.29), None, T)
    assert not d.promotable
    assert [c.line() for c in d.failures] == ["ndcg@10 overall 0.29 is below the floor 0.3"]


def test_a_candidate_worse_on_raw_logged_metrics_is_promoted_when_the_debiased_lower_bound_clears_the_tolerance():
    d = decide(cand(auc=0.70, ndcg=0.45), champ(), T, paired=paired(0.02, -0.004, 0.044))
    assert d.promotable  # raw: candidate 0.45 vs champion 0.60 on the champion's own lists; not compared
    (check,) = [c for c in d.checks if c.kind == "comparison"]
    assert (check.scope, check.metric, check.candidate, check.champion, check.diff, check.low, check.high,
            check.support, check.limit, check.verdict, check.estimator) == (
        "overall", "ndcg@10", 0.52, 0.50, 0.02, -0.004, 0.044, 400, -0.005, "not worse", "snips-ipw")
    assert d.to_dict()["comparison"] == {"metric": "ndcg@10", "estimator": "snips-ipw", "candidate": 0.52,
                                         "champion": 0.50, "diff": 0.02, "low": -0.004, "high": 0.044, "lists": 400,
                                         "verdict": "not worse"}


def test_a_lower_bound_above_zero_is_better_and_one_within_the_tolerance_only_not_worse():
    verdicts = {low: decide(cand(), champ(), T, paired=paired(0.01, low, 0.03)).comparison.verdict
                for low in (0.001, 0.0, -0.0049, -0.0051)}
    assert verdicts == {0.001: "better", 0.0: "not worse", -0.0049: "not worse", -0.0051: "inconclusive"}


def test_not_worse_with_an_estimate_below_min_gain_is_no_gain_and_the_champion_stays():
    """The seed-12 case of bench/loop.py: level by the estimate on the champion's own lists, worse in truth."""
    limits = Thresholds(**{**T.to_dict(), "compare": ("ndcg@10",), "tolerance": 0.025, "min_gain": 0.005})
    verdicts = {diff: decide(cand(), champ(), limits,
                             paired=paired(diff, diff - 0.019, diff + 0.019)).comparison.verdict
                for diff in (0.001, 0.0049, 0.005, 0.02)}
    assert verdicts == {0.001: "no gain", 0.0049: "no gain", 0.005: "not worse", 0.02: "better"}
    d = decide(cand(), champ(), limits, paired=paired(0.001, -0.018, 0.020))
    assert not d.promotable and not d.asks_approval
    assert [c.line() for c in d.failures] == [
        "ndcg@10 in overall shows no gain: candidate 0.52 vs champion 0.5 (snips-ipw debiased; diff +0.0010, "
        "95% CI [-0.0180, +0.0200] over 400 lists): the estimate +0.0010 is below promotion.min_gain 0.005: not "
        "worse, not better either; the champion stays"]


def test_min_gain_zero_is_off_a_negative_estimate_within_the_tolerance_is_not_worse():
    assert decide(cand(), champ(), T, paired=paired(-0.001, -0.004, 0.002)).comparison.verdict == "not worse"


def test_a_segment_is_never_held_for_no_gain():
    limits = Thresholds(**{**T.to_dict(), "compare": ("ndcg@10",), "min_gain": 0.005})
    d = decide(cand(debiased=_debiased(0.52, tenant_id__acme=(0.5, 100))),
               champ(debiased=_debiased(0.50, tenant_id__acme=(0.5, 100))), limits,
               paired=paired(0.02, 0.001, 0.04, tenant_id__acme=(0.0, -0.01, 0.01, 100)))
    assert d.promotable
    assert {c.scope: c.verdict for c in d.checks if c.kind == "comparison"} == {"overall": "better",
                                                                              "tenant_id=acme": "not worse"}


def test_the_upper_bound_below_minus_tolerance_holds_the_candidate_and_names_the_interval():
    d = decide(cand(debiased=_debiased(0.47)), champ(), T, paired=paired(-0.03, -0.05, -0.01))
    assert not d.promotable and d.comparison.verdict == "worse"
    assert [c.line() for c in d.failures] == [
        "ndcg@10 in overall regressed: candidate 0.47 vs champion 0.5 (snips-ipw debiased; diff -0.0300, "
        "95% CI [-0.0500, -0.0100] over 400 lists; allowed down to -0.0050)"]
    assert d.summary().startswith("candidate 2026-11-05-cand blocked against champion 2026-11-04-champ: ")


@pytest.mark.parametrize("policy, promotable, asks", [
    pytest.param("hold", False, False, id="hold-keeps-the-champion"),
    pytest.param("approve", True, True, id="approve-routes-to-the-human-approval-step"),
    pytest.param("promote", True, False, id="promote-promotes-without-a-verdict"),
])
def test_an_interval_straddling_minus_tolerance_is_inconclusive_and_the_policy_decides(policy, promotable, asks):
    limits = Thresholds(**{**T.to_dict(), "compare": ("ndcg@10",), "inconclusive": policy})
    d = decide(cand(), champ(), limits, paired=paired(0.003, -0.02, 0.026))
    assert (d.promotable, d.asks_approval, d.comparison.verdict) == (promotable, asks, "inconclusive")
    (check,) = [c for c in d.checks if c.kind == "comparison"]
    assert check.passed is promotable
    assert (f"ndcg@10 in overall is inconclusive: candidate 0.52 vs champion 0.5 (snips-ipw debiased; diff +0.0030, "
            f"95% CI [-0.0200, +0.0260] over 400 lists reaches both sides of -0.0050): too little support to tell; "
            f"promotion.inconclusive = {policy}") in d.summary()


def test_too_few_lists_overall_is_inconclusive_however_narrow_the_interval():
    d = decide(cand(), champ(), T, paired=paired(0.05, 0.04, 0.06, lists=49))
    assert not d.promotable and d.comparison.verdict == "inconclusive" and d.comparison.lists == 49
    assert "fewer than min_support 50 judged lists" in d.failures[0].line()


def test_a_segment_clearly_worse_holds_an_inconclusive_segment_does_not_and_a_small_one_is_not_judged():
    cand_blocks = _debiased(0.52, tenant_id__acme=(0.44, 300), tenant_id__globex=(0.40, 100), tenant_id__tiny=(0.1, 49))
    champ_blocks = _debiased(0.50, tenant_id__acme=(0.45, 300), tenant_id__globex=(0.45, 100), tenant_id__tiny=(0.6, 49))
    clear = paired(0.02, 0.001, 0.04, tenant_id__acme=(-0.01, -0.04, 0.02, 300),
                   tenant_id__globex=(-0.05, -0.08, -0.021, 100), tenant_id__tiny=(-0.5, -0.7, -0.3, 49))
    d = decide(cand(debiased=cand_blocks), champ(champ_blocks), T, paired=clear)
    assert not d.promotable and d.comparison.verdict == "better"  # the headline is overall; the segment holds it
    assert [(c.scope, c.verdict, c.passed) for c in d.checks if c.kind == "comparison"] == [
        ("overall", "better", True), ("tenant_id=acme", "inconclusive", True), ("tenant_id=globex", "worse", False)]
    assert [c.line() for c in d.failures] == [
        "ndcg@10 in tenant_id=globex regressed: candidate 0.4 vs champion 0.45 (snips-ipw debiased; diff -0.0500, "
        "95% CI [-0.0800, -0.0210] over 100 lists; allowed down to -0.0200)"]
    within = paired(0.02, 0.001, 0.04, tenant_id__globex=(-0.05, -0.08, -0.019, 100))
    assert decide(cand(debiased=cand_blocks), champ(champ_blocks), T, paired=within).promotable


def test_the_headline_comparison_is_the_worst_verdict_among_the_compared_metrics():
    limits = Thresholds(**{**T.to_dict(), "compare": ("ndcg@10", "ndcg@5")})
    diffs = paired(0.02, 0.001, 0.04)
    diffs["debiased"]["overall"]["ndcg@5"] = {"value": -0.03, "low": -0.05, "high": -0.01}
    d = decide(cand(), champ(), limits, paired=diffs)
    assert (d.comparison.metric, d.comparison.verdict, d.comparison.diff) == ("ndcg@5", "worse", -0.03)
    assert d.comparison.candidate is None  # the hand-built blocks carry ndcg@10 only


def test_a_champion_without_paired_differences_is_a_programming_error():
    with pytest.raises(ValueError, match="paired differences"):
        decide(cand(), champ(), T)


@pytest.mark.parametrize("parity", [
    pytest.param({"max_abs_diff": 3e-5, "rows": 500}, id="diff-above-threshold"),
    pytest.param({"max_abs_diff": None, "rows": 500}, id="onnx-did-not-run"),
    pytest.param(None, id="no-parity-figure"),
])
def test_parity_failure_is_never_promotable(parity):
    d = decide({**cand(0.9, 0.9), "parity": parity}, None, T)
    assert not d.promotable and [c.kind for c in d.failures] == ["parity"]


def test_the_decision_serialises_every_number():
    d = decide(cand(), champ(), T, paired=paired(0.02, 0.001, 0.04)).to_dict()
    assert d["promotable"] is True and d["thresholds"]["floors"] == {"auc": 0.6, "ndcg@10": 0.3}
    assert d["thresholds"]["inconclusive"] == "hold" and d["asks_approval"] is False
    assert set(d["comparison"]) == COMPARISON_KEYS
    assert d["checks"][1] == {"kind": "floor", "scope": "overall", "metric": "auc", "candidate": 0.70, "limit": 0.6,
                              "passed": True, "champion": None, "support": 400, "note": "", "diff": None, "low": None,
                              "high": None, "verdict": "", "estimator": "", "confidence": None}
    assert d["checks"][-1] == {"kind": "comparison", "scope": "overall", "metric": "ndcg@10", "candidate": 0.52,
                               "limit": -0.005, "passed": True, "champion": 0.50, "support": 400, "note": "",
                               "diff": 0.02, "low": 0.001, "high": 0.04, "verdict": "better",
                               "estimator": "snips-ipw", "confidence": 0.95}


def test_manual_run_overrides_are_validated_like_the_config():
    from pydantic import ValidationError

    from feedloop.core.config import Settings
    from feedloop.promotion.steps import thresholds

    t = thresholds(settings=Settings(), overrides={"floors": {"auc": 0.7}, "min_support": 10,
                                                   "inconclusive": "approve"})
    assert (dict(t.floors), t.min_support, t.tolerance, t.compare, t.inconclusive) == (
        {"auc": 0.7}, 10, 0.025, ("ndcg@10",), "approve")
    with pytest.raises(ValidationError, match="tolerence"):
        thresholds(settings=Settings(), overrides={"tolerence": 0.1})
    with pytest.raises(ValidationError, match="floors"):
        thresholds(settings=Settings(), overrides={"floors": {"ndcg@11": 0.5}})
    with pytest.raises(ValidationError, match="compare"):  # AUC pools rows across lists: no debiased AUC
        thresholds(settings=Settings(), overrides={"compare": ["auc"]})
    with pytest.raises(ValidationError, match="inconclusive"):
        thresholds(settings=Settings(), overrides={"inconclusive": "ask"})


def test_a_champion_that_could_not_be_scored_on_these_rows_blocks_and_says_how_to_promote():
    why = "champion 2026-11-04-champ needs feature column(s) this holdout lacks: f_old (its feature set differs)"
    unscorable = {"version": "2026-11-04-champ", "unscorable": why, "overall": {}, "segments": {}}
    d = decide(cand(0.9, 0.8), unscorable, T)
    assert not d.promotable and d.champion == "2026-11-04-champ" and d.comparison.verdict == "not comparable"
    assert [(c.kind, c.passed) for c in d.checks] == [("parity", True), ("floor", True), ("floor", True),
                                                      ("comparable", False)]
    assert d.failures[0].line() == (f"{why}: no regression check is possible; if the new feature set is intended, "
                                    "promote with promotion_mode=force and a force_reason after reading the report")


def test_the_gate_compares_the_block_the_evaluation_chose_and_names_the_lists():
    """paired["gated"] = "explore": the exploration lists' figures decide, whatever the debiased ones say."""
    explore = paired(0.012, -0.003, 0.027)["debiased"]
    both = {**paired(-0.04, -0.06, -0.03), "explore": explore, "gated": "explore",
            "judged_on": "exploration lists, plain metrics (700 judged)"}
    blocks = {"explore": _debiased(0.50)}
    d = decide({**cand(), **blocks}, {**champ(), **blocks}, T, paired=both)
    overall = next(c for c in d.checks if c.kind == "comparison" and c.scope == "overall")
    assert d.promotable and d.comparison.verdict == "not worse" and d.comparison.estimator == "exploration"
    assert overall.diff == 0.012 and overall.note == "on exploration lists, plain metrics (700 judged)"
    assert not decide(cand(), champ(), T, paired={**both, "gated": "debiased"}).promotable


def test_with_tolerance_widths_a_narrow_interval_narrows_the_tolerance_and_the_note_says_so():
    """bench/challengers.py: at ten thousand requests a day an earlier champion 0.025 behind in truth came out
    -0.0119 [-0.0202, -0.0039]; a fixed 0.025 passed it, 1.5 half-widths (0.0122) do not."""
    limits = Thresholds(**{**T.to_dict(), "tolerance": 0.025, "tolerance_widths": 1.5})
    narrow = decide(cand(), champ(), limits, paired=paired(-0.0119, -0.0202, -0.0039))
    assert (narrow.promotable, narrow.comparison.verdict) == (False, "inconclusive")
    (check,) = [c for c in narrow.checks if c.kind == "comparison"]
    assert check.limit == pytest.approx(-0.012225)
    assert "tolerance 0.0122: 1.5 half-widths of the interval (promotion.tolerance 0.025 caps it)" in check.note
    fixed = Thresholds(**{**T.to_dict(), "tolerance": 0.025})
    assert decide(cand(), champ(), fixed, paired=paired(-0.0119, -0.0202, -0.0039)).comparison.verdict == "not worse"


def test_tolerance_widths_never_widen_the_tolerance_and_a_level_fresher_model_still_passes():
    limits = Thresholds(**{**T.to_dict(), "tolerance": 0.025, "tolerance_widths": 1.5})
    wide = decide(cand(), champ(), limits, paired=paired(-0.01, -0.04, 0.02))  # 1.5 half-widths = 0.045
    (check,) = [c for c in wide.checks if c.kind == "comparison"]
    assert (check.limit, wide.comparison.verdict) == (-0.025, "inconclusive") and "half-widths" not in check.note
    level = decide(cand(), champ(), limits, paired=paired(0.001, -0.007, 0.008))  # the seed-11 day of 11-21
    assert (level.promotable, level.comparison.verdict) == (True, "not worse")


def test_a_candidate_scoring_exactly_as_the_champion_is_not_worse_even_with_the_interval_cap():
    """Its interval is [0, 0], so the capped tolerance is 0: the same model retrained must still pass."""
    limits = Thresholds(**{**T.to_dict(), "tolerance": 0.025, "tolerance_widths": 1.5})
    d = decide(cand(), champ(), limits, paired=paired(0.0, 0.0, 0.0))
    assert (d.promotable, d.comparison.verdict) == (True, "not worse")
