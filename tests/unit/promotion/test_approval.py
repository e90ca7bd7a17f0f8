"""promotion.approval: who waits for a human (close calls and inconclusive verdicts, gate mode only) and what
the approver reads. The figures are the debiased (snips-ipw) ones and their paired difference."""

from __future__ import annotations

import pytest

from feedloop.contract.decisions import Evaluation, GateResult
from feedloop.promotion import approval as promotion

COMPARE = ("ndcg@5", "ndcg@10")


def evaluation(cand: tuple[float, float], champ: tuple[float, float] | None) -> Evaluation:
    def block(v):
        return {"debiased": {"overall": {"lists": 300, "ndcg@5": {"value": v[0]}, "ndcg@10": {"value": v[1]}}}}

    diffs = None if champ is None else {
        "confidence": 0.95, "debiased": {"overall": {"lists": 300, **{
            m: {"value": c - h, "low": c - h - 0.01, "high": c - h + 0.01}
            for m, c, h in zip(COMPARE, cand, champ)}}}}
    champion = None if champ is None else {"version": "2026-11-04-champ", **block(champ)}
    return Evaluation.from_dict({"candidate": block(cand), "paired": diffs, "champion": champion})


@pytest.mark.parametrize("cand, champ, margin, mode, promotable, inconclusive, required", [
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "gate", True, False, True, id="close-call-waits"),
    pytest.param((0.699, 0.398), (0.700, 0.400), 0.01, "gate", True, False, True,
                 id="slightly-worse-within-tolerance-waits"),
    pytest.param((0.730, 0.402), (0.700, 0.400), 0.01, "gate", True, False, False, id="clearly-better-on-one-metric"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.0, "gate", True, False, False, id="margin-0-is-off"),
    pytest.param((0.730, 0.402), (0.700, 0.400), 0.0, "gate", True, True, True,
                 id="inconclusive-with-approve-waits-even-with-the-margin-off"),
    pytest.param((0.701, 0.402), None, 0.01, "gate", True, False, False, id="first-model-has-no-champion"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "gate", False, False, False, id="blocked-by-the-gate"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "force", False, False, False, id="force-asks-nobody"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "dry-run", True, True, False, id="dry-run-asks-nobody"),
])
def test_who_waits_for_approval(cand, champ, margin, mode, promotable, inconclusive, required):
    a = promotion.approval(evaluation(cand, champ), compare=COMPARE, margin=margin, mode=mode, promotable=promotable,
                           inconclusive=inconclusive)
    assert a.required is required


def test_the_decision_carries_the_numbers_and_says_why():
    a = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01, mode="gate",
                           promotable=True)
    assert a.deltas == pytest.approx({"ndcg@5": 0.001, "ndcg@10": -0.002})
    assert a.why == ("within 0.01 of champion 2026-11-04-champ on every compared metric "
                        "(ndcg@5 +0.0010, ndcg@10 -0.0020)")
    dry = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01,
                             mode="dry-run", promotable=True)
    assert dry.within_margin and not dry.required and dry.why.endswith("promotion_mode=dry-run asks no approval")


def test_an_inconclusive_verdict_says_so_with_the_interval():
    a = promotion.approval(evaluation((0.730, 0.402), (0.700, 0.400)), compare=("ndcg@10",), margin=0.0, mode="gate",
                           promotable=True, inconclusive=True)
    assert a.required and a.inconclusive and not a.within_margin
    assert a.why == ("not told apart from champion 2026-11-04-champ by the gate (ndcg@10 +0.0020 (95% CI "
                        "[-0.0080, +0.0120] over 300 lists); promotion.inconclusive = approve)")


def test_the_request_shows_the_comparison_and_links_the_report():
    a = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01, mode="gate",
                           promotable=True)
    gate = GateResult(version="2026-11-05-cand", promotable=True, champion="2026-11-04-champ",
                      summary="candidate passes the gate", approval=a)
    subject, body = promotion.approval_request(
        gate=gate, report_uri="s3://models/ranker/versions/2026-11-05-cand/report.html",
        run_url="http://airflow:8080/dags/retrain_ranker/runs/r1")
    assert subject == "Promote 2026-11-05-cand over 2026-11-04-champ?"
    assert "| ndcg@5 | 0.7010 | 0.7000 | +0.0010 | [-0.0090, +0.0110] |" in body
    assert "| ndcg@10 | 0.3980 | 0.4000 | -0.0020 | [-0.0120, +0.0080] |" in body
    assert "| metric (snips-ipw, position-debiased) | candidate 2026-11-05-cand |" in body
    assert "(http://airflow:8080/dags/retrain_ranker/runs/r1)" in body
    assert "s3://models/ranker/versions/2026-11-05-cand/report.html" in body and "counts as Reject" in body
