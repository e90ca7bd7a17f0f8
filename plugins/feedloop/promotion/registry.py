"""The model registry on S3: immutable versions, a compare-and-swap live pointer, an append-only flip history.

s3://<models>/ranker/versions/<version>/   model.txt model.onnx metrics.json gate.json report.html features/...
                                           manifest.json (written last: a version exists iff it does)
s3://<models>/ranker/live.json             the pointer the serving pods follow
s3://<models>/ranker/history/<seq>.json    one immutable copy of every pointer ever written

Why this shape (MLflow aliases, but on S3 alone): every object is written once (If-None-Match: *),
so a version can never change under a pod that verified it; the pointer is replaced only by a PUT
with If-Match on the ETag read before, so two promotions cannot both win and the pointer is never
torn; and the history needs no read-modify-write of a shared list, because each pointer carries a
sequence number that names its own history object.

Canary: live.json may carry `canary` = {version, uri, sha256, percent, started_at, started_by,
reason}; pods send that percent of users (a stable hash of user_id) to the canary version. Starting,
ramping, promoting and aborting a canary are pointer writes like any flip (same compare-and-swap,
new seq, history entry), so they cannot race a promotion. At most one canary runs: a promotion is
refused while one does (promote or abort it first), a rollback clears it. The top-level
promoted_at / promoted_by / reason / action always describe the latest write of the pointer.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.pointer import CasPointer, Read
from feedloop.core.storage import ObjectStore, PreconditionFailed

# Every version id: its logical date, then hex (promotion.Candidate.version: "<ds>-<sha256[:10]>"). Pods
# refuse a pointer naming anything else: the id becomes an S3 key and a folder of their local cache.
VERSION_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]+$"
VERSION_MAX = 64  # characters of a version id an operator may name (ours have 21)
REASON_MIN, REASON_MAX = 3, 500  # characters of an operator's reason for a pointer change, once stripped
MANIFEST = "manifest.json"
POINTER_SCHEMA = 1
IDENTITY_KEYS = ("version", "feature_manifest", "lineage", "params")  # plus the sha256 of model.txt


class RegistryError(RuntimeError):
    """A registry operation refused or lost; the message says what to do."""


class VersionConflict(RegistryError):
    """A version id is taken by different content."""


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, store: ObjectStore, bucket: str):
        self.store, self.bucket, self.prefix = store, bucket, layout.RANKER_PREFIX
        self._pointer = CasPointer(store, bucket, layout.RANKER_PREFIX)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(ObjectStore.from_settings(settings), settings.s3.models_bucket)

    # ---- versions -------------------------------------------------------------------------------

    def version_key(self, version: str, name: str = "") -> str:
        return layout.version_key(version, name)

    def version_uri(self, version: str) -> str:
        return layout.version_uri(self.bucket, version)

    def register(self, *, version: str, files: Mapping[str, bytes], manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Write a version once: every file with If-None-Match, then manifest.json with their sha256.

        files maps names under the version folder (e.g. "model.onnx", "features/items.parquet") to
        bytes and must hold model.txt. Registering the same identity again returns the stored
        manifest; a different model under a taken id raises VersionConflict. Files left by an
        interrupted attempt are kept (immutable) and their stored hashes recorded.
        """
        if "model.txt" not in files or "model.onnx" not in files:
            raise ValueError("a version needs model.txt and model.onnx")
        new = {**manifest, "version": version, "model_sha256": sha256(files["model.txt"])}
        existing = self.manifest(version)
        if existing is not None:
            return self.verify_identity(existing, new)
        artifacts = {}
        for name, body in sorted(files.items()):
            artifacts[name] = self._put_once(self.version_key(version, name), body, identity=name == "model.txt")
        new["artifacts"] = artifacts
        try:
            self.store.put_json(self.bucket, self.version_key(version, MANIFEST), new, if_none_match=True)
        except PreconditionFailed:  # a concurrent registration of the same id finished first
            return self.verify_identity(self.manifest(version), new)
        return new

    def manifest(self, version: str) -> dict[str, Any] | None:
        return self.store.get_json(self.bucket, self.version_key(version, MANIFEST))

    def read(self, version: str, name: str) -> bytes:
        found = self.store.get(self.bucket, self.version_key(version, name))
        if found is None:
            raise RegistryError(f"{self.store.uri(self.bucket, self.version_key(version, name))} does not exist")
        return found.body

    def read_json(self, version: str, name: str) -> Any:
        import orjson

        return orjson.loads(self.read(version, name))

    def versions(self) -> list[str]:
        """Registered versions (those with a manifest), oldest first (ids sort by logical date)."""
        root = layout.RANKER_VERSIONS_PREFIX
        return sorted(k[len(root):-len(MANIFEST) - 1] for k in self.store.list_keys(self.bucket, root)
                      if k.endswith("/" + MANIFEST) and k.count("/") == root.count("/") + 1)

    def _put_once(self, key: str, body: bytes, *, identity: bool) -> dict[str, Any]:
        try:
            self.store.put(self.bucket, key, body, if_none_match=True)
            return {"sha256": sha256(body), "bytes": len(body)}
        except PreconditionFailed:
            stored = self.store.get(self.bucket, key).body
        if identity and stored != body:
            raise VersionConflict(f"{self.store.uri(self.bucket, key)} exists with different bytes; "
                                  "a version is immutable: register the new model under a new version id")
        return {"sha256": sha256(stored), "bytes": len(stored)}

    def verify_identity(self, existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """existing if new describes the same model (re-registration is a no-op), else VersionConflict."""
        keys = (*IDENTITY_KEYS, "model_sha256")
        differ = [k for k in keys if existing.get(k) != new.get(k)]
        if differ:
            raise VersionConflict(f"version {new['version']} is already registered with a different "
                                  f"{', '.join(differ)}; versions are immutable: use a new version id")
        return existing

    # ---- the live pointer -----------------------------------------------------------------------

    @property
    def live_key(self) -> str:
        return self._pointer.key

    def live(self) -> Live | None:
        found = self._pointer.read()
        return None if found is None else Live(found.pointer, found.etag)

    def plan_flip(self, *, version: str, by: str, reason: str, action: str = "promote",
                  expect_live: str | None | bool = True, logical_date: str | None = None) -> FlipPlan:
        """Read live.json once and prepare the pointer to `version`; refused while a canary runs.

        expect_live: True = any current version; None = there must be no pointer yet; a version id =
        the live version must still be that one (the one live when the candidate was evaluated).
        logical_date: the day whose retrain run flips (see champion_of: the version serves from the next day).
        """
        manifest = self._servable(version)
        current = self.live()
        _expect(current, expect_live, version)
        if current is not None and current.canary:
            raise CanaryConflict(f"{_canary_text(current.canary)} is running: promote it (feedloop model "
                                 f"promote-canary) or abort it (feedloop model abort-canary) before making "
                                 f"{version} live")
        return self._flip(current, version=version, manifest=manifest, by=by, reason=reason, action=action,
                          logical_date=logical_date)

    def commit(self, plan: FlipPlan) -> dict[str, Any]:
        """Write the planned pointer iff live.json is still what the plan read; then its history entry."""
        try:
            self._pointer.replace(plan.current, plan.pointer)
        except PreconditionFailed:
            now = self.live()
            read = f"seq {plan.current.pointer.get('seq')}" if plan.current else "no pointer"
            raise PointerRaceLost(
                f"live.json changed since it was read ({read}; now {_state(now.pointer) if now else 'no pointer'}): "
                f"another promotion, rollback or canary change won; this {plan.pointer['action']} "
                f"({_state(plan.pointer)}) was NOT applied and nothing was changed") from None
        return plan.pointer

    def flip(self, *, version: str, by: str, reason: str, action: str = "promote",
             expect_live: str | None | bool = True, logical_date: str | None = None) -> dict[str, Any]:
        return self.commit(self.plan_flip(version=version, by=by, reason=reason, action=action,
                                          expect_live=expect_live, logical_date=logical_date))

    def plan_rollback(self, *, to: str | None, by: str, reason: str) -> FlipPlan:
        """The pointer back to `to` (default: the previous live version); clears a running canary."""
        reason = _operator_reason(reason)
        current = self.live()
        if current is None:
            raise RegistryError("no live model: nothing to roll back")
        target = to or current.pointer.get("previous")
        if not target:
            raise RegistryError(f"live model {current.version} has no previous version; give the target version")
        if target == current.version:
            raise RegistryError(f"{target} is already live")
        return self._flip(current, version=target, manifest=self._servable(target), by=by, reason=reason,
                          action="rollback")

    # ---- canary ---------------------------------------------------------------------------------

    def plan_canary(self, *, version: str, percent: float, by: str, reason: str,
                    expect_live: str | None | bool = True) -> FlipPlan:
        """Start a canary of `version` at `percent` of users, or change the percent of its running canary.

        expect_live as in plan_flip: the live version the candidate was gated against.
        """
        percent = _percent(percent)
        _need_reason(reason, "a canary")  # not reason_problem: a retrain run's own reason quotes the gate
        manifest = self._servable(version)
        current = self.live()
        if current is None:
            raise RegistryError(f"no live model: a canary needs one to share traffic with; make {version} live "
                                "with a normal promotion")
        _expect(current, expect_live, version)
        if current.version == version:
            raise RegistryError(f"{version} is already live: there is nothing to canary")
        running = current.canary
        if running and running["version"] != version:
            raise CanaryConflict(f"{_canary_text(running)} is running: promote it (feedloop model promote-canary) "
                                 f"or abort it (feedloop model abort-canary) before starting a canary of {version}")
        if running and running["percent"] == percent:
            raise RegistryError(f"{_canary_text(running)} is already running: nothing to change")
        canary = running or {"version": version, "uri": self.version_uri(version),
                             "sha256": manifest["artifacts"]["model.onnx"]["sha256"],
                             "started_at": _now(), "started_by": by, "reason": reason}
        return self._amend(current, by=by, reason=reason, action="canary", canary={**canary, "percent": percent})

    def plan_promote_canary(self, *, by: str, reason: str) -> FlipPlan:
        """The running canary becomes the live version (previous = the old live one); canary = null."""
        reason = _operator_reason(reason)
        current = self._canary_running("promote")
        version = current.canary["version"]
        return self._flip(current, version=version, manifest=self._servable(version), by=by, reason=reason,
                          action="promote-canary")

    def plan_abort_canary(self, *, by: str, reason: str) -> FlipPlan:
        """canary = null: every user is served the live version again, which stays as it is."""
        reason = _operator_reason(reason)
        return self._amend(self._canary_running("abort"), by=by, reason=reason, action="abort-canary", canary=None)

    # ---- pointer building -----------------------------------------------------------------------

    def _servable(self, version: str) -> dict[str, Any]:
        """The manifest of a version that may serve traffic: registered and ONNX parity passed."""
        manifest = self.manifest(version)
        if manifest is None:
            raise RegistryError(f"version {version} is not registered ({self.version_uri(version)} has no manifest)")
        if not (manifest.get("parity") or {}).get("passed"):
            raise RegistryError(f"version {version} failed ONNX parity and can never be live")
        return manifest

    def _canary_running(self, verb: str) -> Live:
        current = self.live()
        if current is None or not current.canary:
            raise RegistryError(f"no canary is running: nothing to {verb} (start one with "
                                "feedloop model canary VERSION --percent N --reason TEXT)")
        return current

    def _flip(self, current: Live | None, *, version: str, manifest: dict[str, Any], by: str, reason: str,
              action: str, logical_date: str | None = None) -> FlipPlan:
        """A pointer that makes `version` live, with no canary; logical_date only for a retrain run's flip."""
        pointer = {
            "schema_version": POINTER_SCHEMA,
            "seq": (current.pointer.get("seq", 0) + 1) if current else 1,
            "version": version,
            "uri": self.version_uri(version),
            "sha256": manifest["artifacts"]["model.onnx"]["sha256"],
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

    def _amend(self, current: Live, *, by: str, reason: str, action: str,
               canary: dict[str, Any] | None) -> FlipPlan:
        """The current pointer with only its canary changed: the live version (and previous) stay."""
        pointer = {**current.pointer, "seq": current.pointer.get("seq", 0) + 1, "promoted_at": _now(),
                   "promoted_by": by, "reason": reason, "action": action, "canary": canary}
        return FlipPlan(current, pointer)

    # ---- history --------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Every pointer ever written, oldest first (the live one included even if its entry was lost)."""
        return self._pointer.history()

    def entry(self, seq: int) -> dict[str, Any] | None:
        """History entry `seq` (read by name: no listing)."""
        return self._pointer.entry(seq)

    def champion_of(self, day: date) -> str | None:
        """The version that was live at the end of `day`, never one trained on `day` or later.

        Why not simply the live version: a candidate of day D is judged on D's requests, so its rival
        must be the model that served D. Today's champion was trained on D itself when D is backfilled
        (its holdout leaks into the rival), and the live one may be days newer. Entries are walked from
        the live pointer's seq down, by name; the newest one in effect before the end of D wins.
        """
        current = self.live()
        if current is None:
            return None
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
        for seq in range(current.pointer.get("seq", 0), 0, -1):
            pointer = current.pointer if seq == current.pointer.get("seq") else self.entry(seq)
            if pointer is None:
                continue
            trained = version_day(pointer["version"])
            if in_effect_from(pointer) < end and (trained is None or trained < day):
                return pointer["version"]
        return None


def _expect(current: Live | None, expect_live: str | None | bool, version: str) -> None:
    live_version = current.version if current else None
    if expect_live is not True and live_version != expect_live:
        raise PointerRaceLost(f"live model is {live_version or '(none)'}, not {expect_live or '(none)'} as "
                              f"when {version} was gated; nothing was changed: re-run to gate against it")


def _percent(percent: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        raise RegistryError(f"canary percent must be a number in (0, 100], got {percent!r}")
    return float(percent)


def _operator_reason(reason: str) -> str:
    """The stripped reason of a change only an operator makes (rollback, promote or abort a canary), or refused."""
    if why := reason_problem(reason):
        raise InvalidPointerChange([("reason", why)])
    return reason.strip()


def _need_reason(reason: str, what: str) -> None:
    if not (reason or "").strip():
        raise RegistryError(f"{what} needs a reason")


def _canary_text(canary: Mapping[str, Any]) -> str:
    return f"a canary of {canary['version']} at {canary['percent']:g}%"


def _state(pointer: Mapping[str, Any]) -> str:
    """One line for a pointer: the live version and its canary."""
    canary = pointer.get("canary")
    return f"live {pointer['version']}" + (f", canary {canary['version']} at {canary['percent']:g}%" if canary else "")


def version_day(version: str) -> date | None:
    """The logical date a version id starts with ("2026-11-05-ab12cd34ef"), None for another id."""
    try:
        return date.fromisoformat(version[:10])
    except ValueError:
        return None


def in_effect_from(pointer: Mapping[str, Any]) -> datetime:
    """When a pointer entry took effect, on the data's clock.

    A retrain run's flip for day D serves from the start of D + 1, whenever the run itself ran (a
    backfill, a simulated past, a late run); any other change (rollback, canary, a flip by hand) from
    the moment it was written.
    """
    if pointer.get("logical_date"):
        day = date.fromisoformat(pointer["logical_date"]) + timedelta(days=1)
        return datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    return datetime.fromisoformat(pointer["promoted_at"].replace("Z", "+00:00"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


CANARY_ONLY = ("canary", "abort-canary")  # actions that leave the live version as it was


def entries(pointers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as an operator reads them: when, live old -> new, the canary after it, who, why."""
    rows = []
    for p in pointers:
        canary = p.get("canary") or {}
        rows.append({"seq": p["seq"], "at": p["promoted_at"],
                     "from": p["version"] if p.get("action") in CANARY_ONLY else p.get("previous"),
                     "to": p["version"], "canary": canary.get("version"), "canary_percent": canary.get("percent"),
                     "action": p.get("action"), "by": p.get("promoted_by"), "reason": p.get("reason")})
    return rows
