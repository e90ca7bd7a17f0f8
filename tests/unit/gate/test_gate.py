"""gate.decide on hand-built metrics: every check, its numbers and the line an operator reads."""

from __future__ import annotations

import pytest

from feedloop.gate import Thresholds, decide

T = Thresholds(floors={"auc": 0.6, "ndcg@10": 0.3}, compare=("auc", "ndcg@10"), tolerance=0.005,
               segment_tolerance=0.02, min_support=50, parity_max_abs_diff=1e-5)
PARITY = {"max_abs_diff": 2e-6, "rows": 500}


def _block(auc, ndcg, groups=400, **segments):
    return {"overall": {"auc": auc, "ndcg@10": ndcg, "groups": groups},
            "segments": {k.replace("__", "="): {"auc": a, "ndcg@10": n, "groups": g}
                         for k, (a, n, g) in segments.items()}}


def cand(*args, **kw):
    return {"version": "2026-11-05-cand", "parity": PARITY, **_block(*args, **kw)}


def champ(*args, **kw):
    return {"version": "2026-11-04-champ", **_block(*args, **kw)}


def test_first_model_needs_the_floors_only():
    d = decide(cand(0.61, 0.31), None, T)
    assert d.promotable and d.champion is None
    assert [(c.kind, c.metric, c.candidate, c.limit, c.passed) for c in d.checks] == [
        ("parity", "max_abs_diff", 2e-6, 1e-5, True), ("floor", "auc", 0.61, 0.6, True),
        ("floor", "ndcg@10", 0.31, 0.3, True)]
    assert d.summary() == "candidate 2026-11-05-cand passes the gate against the floors (first model) (3 checks)"


def test_a_floor_blocks_the_first_model():
    d = decide(cand(0.61, 0.29), None, T)
    assert not d.promotable
    assert [c.line() for c in d.failures] == ["ndcg@10 overall 0.29 is below the floor 0.3"]


def test_a_regression_in_one_segment_blocks_and_names_it():
    d = decide(cand(0.70, 0.45, tenant_id__acme=(0.71, 0.46, 300), tenant_id__globex=(0.66, 0.47, 100)),
               champ(0.70, 0.45, tenant_id__acme=(0.70, 0.44, 300), tenant_id__globex=(0.66, 0.50, 100)), T)
    assert not d.promotable
    (failure,) = d.failures
    assert (failure.scope, failure.metric, failure.candidate, failure.champion, failure.support) == (
        "tenant_id=globex", "ndcg@10", 0.47, 0.50, 100)
    assert failure.limit == pytest.approx(0.48)
    assert failure.line() == ("ndcg@10 in tenant_id=globex regressed: candidate 0.47 vs champion 0.5 "
                              "(delta -0.0300, allowed down to 0.48; 100 query groups)")
    assert "tenant_id=globex" in d.summary() and d.summary().startswith(
        "candidate 2026-11-05-cand blocked against champion 2026-11-04-champ: ")


def test_within_tolerance_passes_overall_and_per_segment():
    d = decide(cand(0.696, 0.446, surface__feed=(0.68, 0.481, 60)),
               champ(0.700, 0.450, surface__feed=(0.69, 0.500, 60)), T)
    assert d.promotable
    assert len([c for c in d.checks if c.kind == "regression"]) == 4


def test_overall_tolerance_is_tighter_than_the_segment_one():
    d = decide(cand(0.690, 0.45), champ(0.700, 0.45), T)
    assert [c.line() for c in d.failures] == [
        "auc in overall regressed: candidate 0.69 vs champion 0.7 "
        "(delta -0.0100, allowed down to 0.695; 400 query groups)"]


def test_segments_below_min_support_are_not_judged():
    d = decide(cand(0.7, 0.45, tenant_id__tiny=(0.2, 0.1, 49)), champ(0.7, 0.45, tenant_id__tiny=(0.9, 0.9, 49)), T)
    assert d.promotable and all(c.scope != "tenant_id=tiny" for c in d.checks)


def test_a_metric_undefined_for_the_champion_is_skipped_but_undefined_for_the_candidate_fails():
    skipped = decide(cand(0.7, 0.45, surface__x=(None, 0.5, 80)), champ(0.7, 0.45, surface__x=(None, 0.5, 80)), T)
    assert skipped.promotable and not any(c.scope == "surface=x" and c.metric == "auc" for c in skipped.checks)
    failed = decide(cand(0.7, 0.45, surface__x=(None, 0.5, 80)), champ(0.7, 0.45, surface__x=(0.6, 0.5, 80)), T)
    assert [(c.scope, c.metric) for c in failed.failures] == [("surface=x", "auc")]


@pytest.mark.parametrize("parity", [
    pytest.param({"max_abs_diff": 3e-5, "rows": 500}, id="diff-above-threshold"),
    pytest.param({"max_abs_diff": None, "rows": 500}, id="onnx-did-not-run"),
    pytest.param(None, id="no-parity-figure"),
])
def test_parity_failure_is_never_promotable(parity):
    d = decide({**cand(0.9, 0.9), "parity": parity}, None, T)
    assert not d.promotable and [c.kind for c in d.failures] == ["parity"]


def test_the_decision_serialises_every_number():
    d = decide(cand(0.61, 0.31), None, T).to_dict()
    assert d["promotable"] is True and d["thresholds"]["floors"] == {"auc": 0.6, "ndcg@10": 0.3}
    assert d["checks"][1] == {"kind": "floor", "scope": "overall", "metric": "auc", "candidate": 0.61, "limit": 0.6,
                              "passed": True, "champion": None, "support": 400, "note": ""}


def test_manual_run_overrides_are_validated_like_the_config():
    from pydantic import ValidationError

    from feedloop.config import Settings
    from feedloop.promotion import thresholds

    t = thresholds(settings=Settings(), overrides={"floors": {"auc": 0.7}, "min_support": 10})
    assert (dict(t.floors), t.min_support, t.tolerance) == ({"auc": 0.7}, 10, 0.005)
    with pytest.raises(ValidationError, match="tolerence"):
        thresholds(settings=Settings(), overrides={"tolerence": 0.1})
    with pytest.raises(ValidationError, match="floors"):
        thresholds(settings=Settings(), overrides={"floors": {"ndcg@11": 0.5}})


def test_a_champion_that_could_not_be_scored_on_these_rows_blocks_and_says_how_to_promote():
    why = "champion 2026-11-04-champ needs feature column(s) this holdout lacks: f_old (its feature set differs)"
    unscorable = {"version": "2026-11-04-champ", "unscorable": why, "overall": {}, "segments": {}}
    d = decide(cand(0.9, 0.8, tenant_id__acme=(0.9, 0.8, 300)), unscorable, T)
    assert not d.promotable and d.champion == "2026-11-04-champ"
    assert [(c.kind, c.passed) for c in d.checks] == [("parity", True), ("floor", True), ("floor", True),
                                                      ("comparable", False)]
    assert d.failures[0].line() == (f"{why}: no regression check is possible; if the new feature set is intended, "
                                    "promote with promotion_mode=force and a force_reason after reading the report")
