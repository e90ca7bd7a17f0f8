"""The retrain run's last step: the gated candidate goes live, or starts its canary, through the registry's CAS.

An operator's own pointer changes (rollback, canary ramp / promote / abort) are
feedloop.promotion.pointer_change; this module acts only on what a run's gate and approval decided.
"""

from __future__ import annotations

import logging
from datetime import date
from feedloop.contract.decisions import ApprovalRecord, FlipResult, GateResult
from feedloop.core.config import Settings
from feedloop.core.errors import PromotionBlocked
from feedloop.promotion.approval import recorded_approval
from feedloop.promotion.candidate import candidate_key, check_mode
from feedloop.promotion.pointer_plan import CanaryConflict, Live
from feedloop.promotion.registry import Registry, version_day

log = logging.getLogger(__name__)


def flip_pointer(*, ds: str, gate: GateResult, promoted_by: str, canary_percent: float | None = None,
                 mode: str = "gate", force_reason: str = "", settings: Settings) -> FlipResult:
    """Make the gated version live, or start its canary, iff the gate passed and the pointer is as evaluated.

    A backfill never moves the pointer back: when the live version was trained on a later day than ds,
    nothing changes and what the flip would have done is staged as flip.json (promotion_mode=force
    moves it anyway). The pointer entry carries ds as its logical_date (see Registry.champion_of).

    canary_percent > 0 (default: promotion.canary_percent) starts a canary of the version at that
    percent instead of flipping; the operator then promotes or aborts it. The first model goes live
    directly (a canary needs a live model to share traffic with). A re-run for the same date changes
    nothing once the version is live or its canary runs (an operator's ramp is not undone).

    mode force flips a version the gate blocked (pointer action "force", force_reason and the gate
    summary in its reason); the pointer must still be as evaluated, as for any flip. mode dry-run changes
    nothing and says what a gate run would do.

    A flip the gate said needs a human (gate.approval.required) goes ahead only on the Approve
    recorded in approval.json (approval.record_approval), whoever runs it: a flip cleared and re-run
    after a Reject or a timeout raises NotApproved, one with no recorded answer PromotionBlocked; the
    approver is named in the pointer's reason.
    """
    check_mode(mode)
    registry = Registry.from_settings(settings)
    version = gate.version
    percent = settings.promotion.canary_percent if canary_percent is None else canary_percent
    if mode == "dry-run":
        return _dry_run_flip(registry, gate, ds=ds, percent=percent)
    forced = mode == "force" and not gate.promotable
    if forced and len(force_reason.strip()) < 3:
        raise PromotionBlocked(f"promotion_mode=force for {version} needs a force_reason; live model unchanged")
    if not gate.promotable and not forced:
        report_uri = registry.store.uri(registry.bucket, registry.version_key(version, "report.html"))
        raise PromotionBlocked(f"promotion of {version} for {ds} blocked, live model unchanged: {gate.summary}. "
                               f"Report: {report_uri}", check="gate", version=version, champion=gate.champion,
                               gate_uri=gate.gate_uri, report_uri=report_uri)
    approval = recorded_approval(registry, ds=ds, gate=gate)
    serving = _serving_version(registry, ds=ds, evaluated=version)
    live = registry.live()
    if live is not None and live.version == serving:
        return FlipResult("unchanged", serving, evaluated=version, previous=live.pointer["previous"],
                          seq=live.pointer["seq"])
    if live is not None and (version_day(live.version) or date.min) > date.fromisoformat(ds):
        if mode != "force":
            return _held_back(registry, gate, ds=ds, live=live, serving=serving)
        forced = True
        if len(force_reason.strip()) < 3:
            raise PromotionBlocked(f"promotion_mode=force for {version} needs a force_reason; live model unchanged")
    reason = _flip_reason(ds, gate, forced=forced, force_reason=force_reason, approval=approval)
    # The compare-and-swap expects the version that was live when the candidate was evaluated: any pointer
    # change since (another flip, a rollback) refuses this one, and a re-run evaluates again.
    expected = _live_when_evaluated(registry, ds=ds, version=version, default=gate.champion)
    try:
        if percent and live is not None:
            return _start_canary(registry, live, version=serving, percent=percent, by=promoted_by, reason=reason,
                                 champion=expected)
        pointer = registry.flip(version=serving, by=promoted_by, reason=reason, expect_live=expected,
                                action="force" if forced else "promote", logical_date=ds)
    except CanaryConflict as exc:  # waits for an operator: a retry would be refused again
        raise PromotionBlocked(f"{version} for {ds} not promoted: {exc}; then clear this task", check="canary",
                               version=version, champion=gate.champion) from exc
    log.info("live model is now %s (was %s)%s", serving, pointer["previous"], " FORCED past the gate" if forced else "")
    return FlipResult("flipped", serving, evaluated=version, previous=pointer["previous"], seq=pointer["seq"],
                      action=pointer["action"])


def _held_back(registry: Registry, gate: GateResult, *, ds: str, live: Live, serving: str) -> FlipResult:
    """A backfilled day's candidate never replaces a model trained on a later day: record what it would have done."""
    version = gate.version
    result = FlipResult(
        "held_back", serving, evaluated=version, live=live.version,
        would="make it live (the gate passed)" if gate.promotable else "nothing (the gate held it)",
        why=f"live model {live.version} was trained on a later day than {ds}: a backfill never moves the live "
            "pointer back to an older day's model (promotion_mode=force does, with a force_reason)")
    registry.store.put_json(registry.bucket, candidate_key(ds, version, "flip.json"), result.to_dict())
    log.warning("%s for %s: pointer left at %s; it would %s", version, ds, live.version, result.would)
    return result


def _serving_version(registry: Registry, *, ds: str, evaluated: str) -> str:
    """The refit of the evaluated version when one was registered (see steps.refit_candidate), else the version."""
    refit = registry.store.get_json(registry.bucket, candidate_key(ds, evaluated, "refit.json"))
    if refit and refit["passed"] and registry.manifest(refit["version"]) is not None:
        return refit["version"]
    return evaluated


def _live_when_evaluated(registry: Registry, *, ds: str, version: str, default: str | None) -> str | None:
    evaluation = registry.store.get_json(registry.bucket, candidate_key(ds, version, "evaluation.json"))
    return evaluation["live"] if evaluation and "live" in evaluation else default


def _flip_reason(ds: str, gate: GateResult, *, forced: bool, force_reason: str,
                 approval: ApprovalRecord | None) -> str:
    """The pointer's reason: the gate summary, and who overrode or approved it."""
    if forced:
        return f"retrain {ds}: FORCED despite the gate: {force_reason.strip()} (gate: {gate.summary})"
    approved = f"; approved by {approval.by}" if approval and approval.decision == "approved" else ""
    return f"retrain {ds}: {gate.summary}{approved}"


def _dry_run_flip(registry: Registry, gate: GateResult, *, ds: str, percent: float) -> FlipResult:
    """What a gate run would do to live.json now; nothing is written."""
    live = registry.live()
    version = gate.version
    if not gate.promotable:
        would = "nothing: the gate blocks it"
    elif live is not None and live.version == version:
        would = "nothing: it is already live"
    elif gate.approval is not None and gate.approval.within_margin:
        would = "wait for a human's approval (within promotion.approval_margin), then promote it"
    elif gate.approval is not None and gate.approval.inconclusive:
        would = "wait for a human's approval (inconclusive against the champion), then promote it"
    elif percent and live is not None:
        would = f"start a canary at {percent:g}%"
    else:
        would = "make it live"
    log.info("dry run for %s: %s would %s (live: %s); live.json unchanged", ds, version, would,
             live.version if live else "none")
    return FlipResult("dry_run", version, would=would, live=live.version if live else None, summary=gate.summary)


def _start_canary(registry: Registry, live: Live, *, version: str, percent: float, by: str, reason: str,
                  champion: str | None) -> FlipResult:
    running = live.canary
    if running and running["version"] == version:
        pointer, started = live.pointer, False
    else:
        pointer, started = registry.commit(registry.plan_canary(version=version, percent=percent, by=by,
                                                                reason=reason, expect_live=champion)), True
        log.info("canary %s at %s%% of users; live model stays %s", version, percent, pointer["version"])
    return FlipResult("canary", version, started=started, percent=pointer["canary"]["percent"],
                      live=pointer["version"], seq=pointer["seq"])
