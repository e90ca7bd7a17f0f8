"""An operator's pointer change (rollback; start, ramp, promote or abort a canary), the same from every door.

Why one function: the rollback and canary DAGs, `feedloop model` and the Models page all call
change_pointer, so each applies the same bounds (pointer_plan.check_pointer_change), the same
compare-and-swap, and a rollback made from any of them sends the same alert. The retrain run's own
flip of a gated candidate is feedloop.promotion.flip.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from feedloop.alerts import send
from feedloop.core.config import Settings
from feedloop.promotion.pointer_plan import FlipPlan, Live, RegistryError, check_pointer_change
from feedloop.promotion.registry import Registry

ACTIONS = ("rollback", "canary", "promote-canary", "abort-canary")


class StalePage(RegistryError):
    """The pointer changed after the page was shown: nothing was applied."""


@dataclass(frozen=True)
class ShownPointer:
    """The pointer a page showed the operator, by seq (None: no pointer); a change made there applies to it only."""

    seq: int | None

    def check(self, current: Live | None) -> None:
        seq = current.pointer.get("seq") if current else None
        if seq != self.seq:
            raise StalePage(f"the live pointer changed since this page was shown (seq {self.seq} then, {seq} now: "
                            f"live {current.version if current else '(none)'}); nothing was applied: "
                            "review the page and try again")


@dataclass(frozen=True)
class PointerChange:
    """A planned change, committed unless dry_run; `alerted` says how the alert of a rollback went out."""

    action: str
    plan: FlipPlan
    dry_run: bool
    alerted: dict[str, str] | None = None

    def summary(self) -> dict[str, Any]:
        """What it did (or would do) and the pointer diff, as the CLI prints it and the DAG tasks return it."""
        pointer = self.plan.pointer
        if self.action == "rollback":
            done = {"dry_run": self.dry_run, "from": pointer["previous"], "to": pointer["version"],
                    "seq": pointer["seq"], "diff": self.plan.diff()}
            return done if self.alerted is None else {**done, "alerted": self.alerted}
        before = self.plan.current.pointer
        return {"dry_run": self.dry_run, "action": pointer["action"], "seq": pointer["seq"],
                "live": pointer["version"], "canary": pointer["canary"],
                "was": {"live": before["version"], "canary": before.get("canary")}, "diff": self.plan.diff()}


def change_pointer(action: str, *, reason: str, by: str, settings: Settings, registry: Registry | None = None,
                   to: str | None = None, percent: float | None = None, dry_run: bool = False,
                   shown: ShownPointer | None = None) -> PointerChange:
    """Plan one pointer change from one read of live.json, commit it with compare-and-swap unless dry_run,
    and announce a rollback that happened.

    to: the rollback's target (default: the previous live version) or the canary's version; percent:
    the canary's share of users; shown: the pointer the operator's page showed (a page only).
    registry: default, the one of `settings` (which also say where the alert goes).
    """
    to, reason = check_pointer_change(to=to, reason=reason)
    if action not in ACTIONS:
        raise RegistryError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    registry = registry or Registry.from_settings(settings)
    if shown is not None:
        shown.check(registry.live())  # first, so a stale page gets this answer, not another refusal
    if action == "rollback":
        plan = registry.plan_rollback(to=to, by=by, reason=reason)
    elif action == "canary":
        plan = registry.plan_canary(version=to, percent=percent, by=by, reason=reason)
    elif action == "promote-canary":
        plan = registry.plan_promote_canary(by=by, reason=reason)
    else:
        plan = registry.plan_abort_canary(by=by, reason=reason)
    if shown is not None:
        shown.check(plan.current)
    change = PointerChange(action, plan, dry_run)
    if dry_run:
        return change
    registry.commit(plan)
    if action != "rollback":
        return change
    return replace(change, alerted=send.announce_rollback(settings, change.summary(), by=by, reason=reason))


def rollback(*, to: str | None, reason: str, by: str, dry_run: bool = False,
             settings: Settings) -> dict[str, Any]:
    """Point live.json back at `to` (default: the previous version) through the same compare-and-swap."""
    return change_pointer("rollback", to=to, reason=reason, by=by, dry_run=dry_run,
                          settings=settings).summary()
