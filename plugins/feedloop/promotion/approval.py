"""Human approval of a flip: who must be asked, what the approver reads, and the answer as a record.

A gate-mode candidate that passed the gate waits for a human when the gate could not tell it from
the champion (promotion.inconclusive = approve) or when it is within promotion.approval_margin of the
champion on every compared metric. The asking and waiting is Airflow's (feedloop.airflow.approval);
the answer is staged as approval.json next to the candidate, and the flip acts on that record only.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from feedloop.contract.decisions import ApprovalDecision, ApprovalRecord, Evaluation, GateResult
from feedloop.core.config import Settings
from feedloop.core.errors import NotApproved, PromotionBlocked
from feedloop.core.storage import ObjectStore
from feedloop.promotion.candidate import candidate_key
from feedloop.promotion.registry import Registry
from feedloop.training.counterfactual import ESTIMATORS, gated_estimate

log = logging.getLogger(__name__)


def approval(evaluation: Evaluation, *, compare: tuple[str, ...], margin: float, mode: str,
             promotable: bool, inconclusive: bool = False) -> ApprovalDecision:
    """Must a human approve this flip? A gate-mode candidate that passed the gate waits when the gate could
    not tell it from the champion and leaves that to a human (`inconclusive`: GateDecision.asks_approval,
    promotion.inconclusive = approve), or when it is within `margin` of the champion on every compared
    metric (a close call; margin 0 turns that off). The figures: the estimate the gate compared on, paired."""
    champ = evaluation.champion
    gated = gated_estimate(evaluation.paired)
    cand_m = _values(evaluation.candidate, gated)
    champ_m = {} if champ is None else _values(champ, gated)
    paired = (evaluation.paired or {}).get(gated, {}).get("overall") or {}
    deltas = {m: paired[m]["value"] for m in compare if (paired.get(m) or {}).get("value") is not None}
    intervals = {m: [paired[m]["low"], paired[m]["high"]] for m in deltas}
    within = bool(margin > 0 and champ is not None and deltas and all(abs(d) < margin for d in deltas.values()))
    shown = ", ".join(f"{m} {d:+.4f}" for m, d in deltas.items()) or "no comparable metric"
    asks = within or inconclusive
    if champ is None:
        why = "first model: there is no champion to compare with"
    elif not promotable:
        why = "the gate blocked the candidate"
    elif inconclusive:
        level = f"{(evaluation.paired or {}).get('confidence', 0.95) * 100:g}% CI"
        shown_ci = ", ".join(f"{m} {d:+.4f} ({level} [{intervals[m][0]:+.4f}, {intervals[m][1]:+.4f}] over "
                             f"{paired.get('lists')} lists)" for m, d in deltas.items()) or "no comparable metric"
        why = (f"not told apart from champion {champ['version']} by the gate ({shown_ci}; "
               "promotion.inconclusive = approve)")
    elif margin <= 0:
        why = "approval is off (promotion.approval_margin = 0)"
    elif not within:
        why = f"clearly apart from champion {champ['version']} ({shown}; margin {margin:g})"
    else:
        why = f"within {margin:g} of champion {champ['version']} on every compared metric ({shown})"
    if asks and promotable and mode != "gate":
        why = f"{why}; promotion_mode={mode} asks no approval"
    return ApprovalDecision(required=asks and promotable and mode == "gate", within_margin=within,
                            inconclusive=inconclusive, why=why, margin=margin, deltas=deltas, intervals=intervals,
                            estimator=ESTIMATORS[gated], champion=evaluation.champion_version,
                            candidate_metrics={m: cand_m.get(m) for m in compare},
                            champion_metrics={m: champ_m.get(m) for m in compare})


def _values(block: dict[str, Any], estimate: str) -> dict[str, float | None]:
    overall = (block.get(estimate) or {}).get("overall") or {}
    return {m: v.get("value") for m, v in overall.items() if isinstance(v, dict)}


def approval_request(*, gate: GateResult, report_uri: str, run_url: str) -> tuple[str, str]:
    """Subject and Markdown body an approver sees: the comparison and where the report is (report_uri: the
    register step's)."""
    a = gate.approval
    rows = "\n".join(f"| {m} | {_num(a.candidate_metrics.get(m))} | {_num(a.champion_metrics.get(m))} "
                      f"| {_num(a.deltas.get(m), signed=True)} | {_ci(a.intervals.get(m))} |"
                      for m in a.candidate_metrics)
    subject = f"Promote {gate.version} over {a.champion}?"
    body = (f"The candidate passed the gate but is {a.why}, so a human decides.\n\n"
            f"| metric ({a.estimator}, position-debiased) | candidate {gate.version} | champion {a.champion} "
            f"| delta | interval of the delta |\n|---|---|---|---|---|\n{rows}\n\n"
            f"Gate: {gate.summary}\n\n"
            f"Report: [Model report tab of this run]({run_url}) · `{report_uri}`\n\n"
            "**Approve** makes it live (the flip task runs); **Reject** keeps the champion live. "
            "No answer before the timeout counts as Reject.")
    return subject, body


def record_approval(*, ds: str, version: str, chosen: list[str], by: str | None, timed_out: bool,
                    settings: Settings, asked_in: str | None = None) -> ApprovalRecord:
    """The human decision (or its absence), staged as approval.json next to the candidate; returned for the flip."""
    decision = "timed out" if timed_out else ("approved" if chosen == ["Approve"] else "rejected")
    record = ApprovalRecord(version=version, logical_date=ds, decision=decision, chosen=chosen,
                            by=by or "nobody (timeout: the default is Reject)",
                            at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                            asked_in=asked_in)
    store = ObjectStore.from_settings(settings)
    key = candidate_key(ds, version, "approval.json")
    store.put_json(settings.s3.models_bucket, key, record.to_dict())
    (log.info if decision == "approved" else log.warning)(
        "%s %s for %s: %s", version, decision, ds,
        "the flip runs" if decision == "approved" else "promotion skipped, the live model stays")
    return replace(record, uri=store.uri(settings.s3.models_bucket, key))


def answer_to(*, ds: str, version: str, asked_in: str, settings: Settings) -> ApprovalRecord | None:
    """The answer recorded for this asking of the question (None: none, or only an earlier asking's)."""
    store = ObjectStore.from_settings(settings)
    key = candidate_key(ds, version, "approval.json")
    stored = store.get_json(settings.s3.models_bucket, key)
    if not isinstance(stored, dict) or stored.get("asked_in") != asked_in:
        return None
    return replace(ApprovalRecord.from_dict(stored), uri=store.uri(settings.s3.models_bucket, key))


def recorded_approval(registry: Registry, *, ds: str, gate: GateResult) -> ApprovalRecord | None:
    """The recorded Approve of a flip that needs one (None when none is needed); refuses any other answer.

    Why the record on S3 and not the approve task's XCom: the flip can run without the approve step
    having approved (cleared and re-run after a Reject, or approve marked success by hand); the record
    is what the human decided, whatever ran since.
    """
    if gate.approval is None or not gate.approval.required:
        return None
    version = gate.version
    key = candidate_key(ds, version, "approval.json")
    stored = registry.store.get_json(registry.bucket, key)
    if stored is None:
        raise PromotionBlocked(f"{version} for {ds} needs a human's Approve and none is recorded "
                               f"({registry.store.uri(registry.bucket, key)} does not exist); live model unchanged: "
                               "clear the approve task to ask again, or re-run with promotion_mode=force",
                               check="approval", version=version, champion=gate.champion)
    record = ApprovalRecord.from_dict(stored)
    if record.decision != "approved":
        answer = (f"rejected by {record.by}" if record.decision == "rejected"
                  else "not approved before the approval timeout (no answer counts as Reject)")
        raise NotApproved(f"{version} for {ds} was {answer} at {record.at}; live model unchanged. To promote "
                          "it, clear the approve task to ask again")
    return record


def _num(value: float | None, *, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def _ci(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
