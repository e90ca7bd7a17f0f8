"""promotion.approval: who waits for a human (close calls in gate mode only) and what the approver reads."""

from __future__ import annotations

import pytest

from feedloop import promotion

COMPARE = ("auc", "ndcg@10")


def evaluation(cand: tuple[float, float], champ: tuple[float, float] | None) -> dict:
    block = lambda v: {"auc": v[0], "ndcg@10": v[1]}  # noqa: E731
    return {"candidate": {"overall": block(cand)},
            "champion": None if champ is None else {"version": "2026-11-04-champ", "overall": block(champ)}}


@pytest.mark.parametrize("cand, champ, margin, mode, promotable, required", [
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "gate", True, True, id="close-call-waits"),
    pytest.param((0.699, 0.398), (0.700, 0.400), 0.01, "gate", True, True, id="slightly-worse-within-tolerance-waits"),
    pytest.param((0.730, 0.402), (0.700, 0.400), 0.01, "gate", True, False, id="clearly-better-on-one-metric"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.0, "gate", True, False, id="margin-0-is-off"),
    pytest.param((0.701, 0.402), None, 0.01, "gate", True, False, id="first-model-has-no-champion"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "gate", False, False, id="blocked-by-the-gate"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "force", False, False, id="force-asks-nobody"),
    pytest.param((0.701, 0.402), (0.700, 0.400), 0.01, "dry-run", True, False, id="dry-run-asks-nobody"),
])
def test_who_waits_for_approval(cand, champ, margin, mode, promotable, required):
    a = promotion.approval(evaluation(cand, champ), compare=COMPARE, margin=margin, mode=mode, promotable=promotable)
    assert a["required"] is required


def test_the_decision_carries_the_numbers_and_says_why():
    a = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01, mode="gate",
                           promotable=True)
    assert a["deltas"] == pytest.approx({"auc": 0.001, "ndcg@10": -0.002})
    assert a["why"] == "within 0.01 of champion 2026-11-04-champ on every compared metric (auc +0.0010, ndcg@10 -0.0020)"
    dry = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01,
                             mode="dry-run", promotable=True)
    assert dry["within_margin"] and not dry["required"] and dry["why"].endswith("promotion_mode=dry-run asks no approval")


def test_the_request_shows_the_comparison_and_links_the_report():
    a = promotion.approval(evaluation((0.701, 0.398), (0.700, 0.400)), compare=COMPARE, margin=0.01, mode="gate",
                           promotable=True)
    gate = {"version": "2026-11-05-cand", "summary": "candidate passes the gate", "approval": a}
    subject, body = promotion.approval_request(
        gate=gate, registered={"report_uri": "s3://models/ranker/versions/2026-11-05-cand/report.html"},
        run_url="http://airflow:8080/dags/retrain_ranker/runs/r1")
    assert subject == "Promote 2026-11-05-cand over 2026-11-04-champ?"
    assert "| auc | 0.7010 | 0.7000 | +0.0010 |" in body and "| ndcg@10 | 0.3980 | 0.4000 | -0.0020 |" in body
    assert "(http://airflow:8080/dags/retrain_ranker/runs/r1)" in body
    assert "s3://models/ranker/versions/2026-11-05-cand/report.html" in body and "counts as Reject" in body
