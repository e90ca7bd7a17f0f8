"""A pointer change as data: what each kind of change writes, built from one read of live.json, and when it is refused.

Why apart from the registry: these rules read nothing and write nothing, so the registry
(feedloop.promotion.registry) reads live.json and the manifests, hands them here, and commits the
FlipPlan that comes back with its compare-and-swap; every refusal is decided on the same inputs.

Canary: live.json may carry `canary` = {version, uri, sha256, percent, started_at, started_by,
reason}; pods send that percent of users (a stable hash of user_id) to the canary version. Starting,
ramping, promoting and aborting a canary are pointer writes like any flip (same compare-and-swap,
new seq, history entry), so they cannot race a promotion. At most one canary runs: a promotion is
refused while one does (promote or abort it first), a rollback clears it. The top-level
promoted_at / promoted_by / reason / action always describe the latest write of the pointer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from feedloop.core.pointer import Read

# Every version id: its logical date, then hex (promotion.Candidate.version: "<ds>-<sha256[:10]>"). Pods
# refuse a pointer naming anything else: the id becomes an S3 key and a folder of their local cache.
VERSION_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]+$"
VERSION_MAX = 64  # characters of a version id an operator may name (ours have 21)
REASON_MIN, REASON_MAX = 3, 500  # characters of an operator's reason for a pointer change, once stripped
POINTER_SCHEMA = 1


class RegistryError(RuntimeError):
    """A registry operation refused or lost; the message says what to do."""


class PointerRaceLost(RegistryError):
    """live.json changed between read and write: another flip won, nothing was changed."""


class CanaryConflict(RegistryError):
    """A canary runs where the action needs none (or another one): promote or abort it first."""


class InvalidPointerChange(RegistryError):
    """An operator's pointer change names no version id or gives no usable reason; each problem names its field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {why}" for field, why in problems) + "; nothing was changed")


def pointer_change_problems(*, reason: Any, to: Any = None) -> list[tuple[str, str]]:
    """What is wrong with an operator's pointer change ("to": the target version, "reason"), field by field.

    Why one function: the rollback and canary DAGs' params, `feedloop model` and the Models page all
    call it (and the registry's rollback and canary promote / abort plans check the reason with it), so
    no door accepts what another refuses. The reason is recorded in live.json and its history and
    shown on every page and alert: one line of text (no control characters, none that cannot be
    written as UTF-8), REASON_MIN..REASON_MAX characters.
    """
    problems = [("to", why)] if (why := version_problem(to)) else []
    return problems + ([("reason", why)] if (why := reason_problem(reason)) else [])


def version_problem(to: Any) -> str | None:
    """Why `to` is no version id an operator may name (None or "": no target given, which is fine)."""
    if to in (None, "") or (isinstance(to, str) and len(to) <= VERSION_MAX and re.fullmatch(VERSION_PATTERN, to)):
        return None
    return (f"{_cut(to)} is not a version id: YYYY-MM-DD-<hex digits>, at most {VERSION_MAX} characters "
            "(e.g. 2026-11-20-3f9a1c2b7e; feedloop model list shows them)")


def reason_problem(reason: Any) -> str | None:
    """Why `reason` cannot be recorded as an operator's reason for a pointer change (None: it can)."""
    if not isinstance(reason, str):
        return f"must be text, got {type(reason).__name__}"
    text = reason.strip()
    bad = next((i for i, c in enumerate(text) if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        return (f"must be one line of text: character {ord(text[bad]):#06x} at position {bad} is a control "
                "character or not text")
    if len(text) < REASON_MIN:
        return f"required: at least {REASON_MIN} characters saying why (recorded in the pointer history)"
    if len(text) > REASON_MAX:
        return f"at most {REASON_MAX} characters, got {len(text)}: say why in short and link the details"
    return None


def check_pointer_change(*, reason: Any, to: Any = None) -> tuple[str | None, str]:
    """(to or None, the stripped reason) of a valid pointer change; raises InvalidPointerChange otherwise."""
    problems = pointer_change_problems(reason=reason, to=to)
    if problems:
        raise InvalidPointerChange(problems)
    return to or None, reason.strip()


def operator_reason(reason: str) -> str:
    """The stripped reason of a change only an operator makes (rollback, promote or abort a canary), or refused."""
    if why := reason_problem(reason):
        raise InvalidPointerChange([("reason", why)])
    return reason.strip()


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Live(Read):
    @property
    def version(self) -> str:
        return self.pointer["version"]

    @property
    def canary(self) -> dict[str, Any] | None:
        return self.pointer.get("canary")


@dataclass(frozen=True)
class FlipPlan:
    """A pointer write prepared from one read of live.json: what it replaces and what it writes."""

    current: Live | None
    pointer: dict[str, Any]

    def diff(self) -> dict[str, Any]:
        old = self.current.pointer if self.current else {}
        return {k: {"from": old.get(k), "to": v} for k, v in self.pointer.items() if old.get(k) != v}


# ---- the pointer each change writes; `manifest` is the target's, `uri` its version folder ----------

def make_live(current: Live | None, *, version: str, uri: str, manifest: Mapping[str, Any], by: str, reason: str,
         action: str, expect_live: str | None | bool, logical_date: str | None) -> FlipPlan:
    """`version` live, as Registry.plan_flip asks; refused while a canary runs."""
    expect(current, expect_live, version)
    if current is not None and current.canary:
        raise CanaryConflict(f"{canary_text(current.canary)} is running: promote it (feedloop model "
                             f"promote-canary) or abort it (feedloop model abort-canary) before making "
                             f"{version} live")
    return point_to(current, version=version, uri=uri, manifest=manifest, by=by, reason=reason, action=action,
                    logical_date=logical_date)


def rollback_target(current: Live | None, to: str | None) -> str:
    """The version a rollback points at: `to`, default the previous live version."""
    if current is None:
        raise RegistryError("no live model: nothing to roll back")
    target = to or current.pointer.get("previous")
    if not target:
        raise RegistryError(f"live model {current.version} has no previous version; give the target version")
    if target == current.version:
        raise RegistryError(f"{target} is already live")
    return target


def canary_at(current: Live | None, *, version: str, uri: str, manifest: Mapping[str, Any], percent: float, by: str,
           reason: str, expect_live: str | None | bool) -> FlipPlan:
    """A canary of `version` at `percent` of users started, or the percent of its running canary changed."""
    if current is None:
        raise RegistryError(f"no live model: a canary needs one to share traffic with; make {version} live "
                            "with a normal promotion")
    expect(current, expect_live, version)
    if current.version == version:
        raise RegistryError(f"{version} is already live: there is nothing to canary")
    running = current.canary
    if running and running["version"] != version:
        raise CanaryConflict(f"{canary_text(running)} is running: promote it (feedloop model promote-canary) "
                             f"or abort it (feedloop model abort-canary) before starting a canary of {version}")
    if running and running["percent"] == percent:
        raise RegistryError(f"{canary_text(running)} is already running: nothing to change")
    record = running or {"version": version, "uri": uri, "sha256": served_sha256(manifest),
                         "started_at": _now(), "started_by": by, "reason": reason}
    return amend(current, by=by, reason=reason, action="canary", canary={**record, "percent": percent})


def running_canary(current: Live | None, verb: str) -> Live:
    """The pointer read, refused unless a canary runs (there is something to `verb`)."""
    if current is None or not current.canary:
        raise RegistryError(f"no canary is running: nothing to {verb} (start one with "
                            "feedloop model canary VERSION --percent N --reason TEXT)")
    return current


def point_to(current: Live | None, *, version: str, uri: str, manifest: Mapping[str, Any], by: str, reason: str,
             action: str, logical_date: str | None = None) -> FlipPlan:
    """A pointer that makes `version` live, with no canary; logical_date only for a retrain run's flip."""
    pointer = {
        "schema_version": POINTER_SCHEMA,
        "seq": (current.pointer.get("seq", 0) + 1) if current else 1,
        "version": version,
        "uri": uri,
        "sha256": served_sha256(manifest),
        "promoted_at": _now(),
        "promoted_by": by,
        "previous": current.version if current else None,
        "reason": reason,
        "action": action,
        "canary": None,
    }
    if logical_date is not None:
        pointer["logical_date"] = logical_date
    return FlipPlan(current, pointer)


def served_sha256(manifest: Mapping[str, Any]) -> str:
    """The sha256 the pointer carries: of the file the pods load (model.onnx unless the manifest names another)."""
    return manifest["artifacts"][manifest.get("served_file", "model.onnx")]["sha256"]


def amend(current: Live, *, by: str, reason: str, action: str, canary: dict[str, Any] | None) -> FlipPlan:
    """The current pointer with only its canary changed: the live version (and previous) stay."""
    pointer = {**current.pointer, "seq": current.pointer.get("seq", 0) + 1, "promoted_at": _now(),
               "promoted_by": by, "reason": reason, "action": action, "canary": canary}
    return FlipPlan(current, pointer)


def expect(current: Live | None, expect_live: str | None | bool, version: str) -> None:
    """Refuse unless the live version is `expect_live` (True: any; None: no pointer yet)."""
    live_version = current.version if current else None
    if expect_live is not True and live_version != expect_live:
        raise PointerRaceLost(f"live model is {live_version or '(none)'}, not {expect_live or '(none)'} as "
                              f"when {version} was gated; nothing was changed: re-run to gate against it")


def canary_percent(percent: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        raise RegistryError(f"canary percent must be a number in (0, 100], got {percent!r}")
    return float(percent)


def need_reason(reason: str, what: str) -> None:
    if not (reason or "").strip():
        raise RegistryError(f"{what} needs a reason")


def canary_text(canary: Mapping[str, Any]) -> str:
    return f"a canary of {canary['version']} at {canary['percent']:g}%"


def state(pointer: Mapping[str, Any]) -> str:
    """One line for a pointer: the live version and its canary."""
    canary = pointer.get("canary")
    return f"live {pointer['version']}" + (f", canary {canary['version']} at {canary['percent']:g}%" if canary else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
