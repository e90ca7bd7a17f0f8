"""The model registry on S3: immutable versions, a compare-and-swap live pointer, an append-only flip history.

s3://<models>/ranker/versions/<version>/   model.txt model.onnx metrics.json gate.json report.html features/...
                                           manifest.json (written last: a version exists iff it does)
s3://<models>/ranker/live.json             the pointer the serving pods follow
s3://<models>/ranker/history/<seq>.json    one immutable copy of every pointer ever written
s3://<models>/retriever/...                the same for the two-tower retriever (Registry(..., kind=RETRIEVER)):
                                           its own versions, pointer and history; query.onnx identifies a version

Why this shape (MLflow aliases, but on S3 alone): every object is written once (If-None-Match: *),
so a version can never change under a pod that verified it; the pointer is replaced only by a PUT
with If-Match on the ETag read before, so two promotions cannot both win and the pointer is never
torn; and the history needs no read-modify-write of a shared list, because each pointer carries a
sequence number that names its own history object. What each pointer change writes, and when one
is refused (canaries included), is decided by feedloop.promotion.pointer_plan on what this module read.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

import orjson

from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.pointer import CasPointer
from feedloop.core.storage import ObjectStore, PreconditionFailed
from feedloop.promotion import pointer_plan
from feedloop.promotion.pointer_plan import FlipPlan, Live, PointerRaceLost, RegistryError

MANIFEST = "manifest.json"
IDENTITY_KEYS = ("version", "feature_manifest", "lineage", "params")  # plus the sha256 of model.txt


class VersionConflict(RegistryError):
    """A version id is taken by different content."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    def __init__(self, store: ObjectStore, bucket: str, kind: layout.ModelKind = layout.RANKER):
        self.store, self.bucket, self.kind, self.prefix = store, bucket, kind, kind.prefix
        self._pointer = CasPointer(store, bucket, kind.prefix)

    @classmethod
    def from_settings(cls, settings: Settings, kind: layout.ModelKind = layout.RANKER) -> Registry:
        return cls(ObjectStore.from_settings(settings), settings.s3.models_bucket, kind)

    # ---- versions -------------------------------------------------------------------------------

    def version_key(self, version: str, name: str = "") -> str:
        return self.kind.version_key(version, name)

    def version_uri(self, version: str) -> str:
        return self.kind.version_uri(self.bucket, version)

    def register(self, *, version: str, files: Mapping[str, bytes], manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Write a version once: every file with If-None-Match, then manifest.json with their sha256.

        files maps names under the version folder (e.g. "model.onnx", "features/items.parquet") to
        bytes and must hold the kind's identity and served files (a ranker: model.txt and model.onnx).
        Registering the same identity again returns the stored manifest; a different model under a taken
        id raises VersionConflict. Files left by an interrupted attempt are kept (immutable) and their
        stored hashes recorded.
        """
        identity, served = self.kind.identity_file, self.kind.served_file
        if identity not in files or served not in files:
            raise ValueError(f"a {self.kind.name} version needs {identity} and {served}")
        new = {**manifest, "version": version, "model_sha256": sha256(files[identity])}
        if served != layout.RANKER.served_file:  # a ranker's manifest stays as it always was
            new["served_file"] = served
        existing = self.manifest(version)
        if existing is not None:
            return self.verify_identity(existing, new)
        artifacts = {}
        for name, body in sorted(files.items()):
            artifacts[name] = self._put_once(self.version_key(version, name), body, identity=name == identity)
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
        return orjson.loads(self.read(version, name))

    def versions(self) -> list[str]:
        """Registered versions (those with a manifest), oldest first (ids sort by logical date)."""
        root = self.kind.versions_prefix
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
        return pointer_plan.make_live(self.live(), version=version, uri=self.version_uri(version), manifest=manifest,
                                      by=by, reason=reason, action=action, expect_live=expect_live,
                                      logical_date=logical_date)

    def commit(self, plan: FlipPlan) -> dict[str, Any]:
        """Write the planned pointer iff live.json is still what the plan read; then its history entry."""
        try:
            self._pointer.replace(plan.current, plan.pointer)
        except PreconditionFailed:
            now = self.live()
            read = f"seq {plan.current.pointer.get('seq')}" if plan.current else "no pointer"
            found = pointer_plan.state(now.pointer) if now else "no pointer"
            raise PointerRaceLost(
                f"live.json changed since it was read ({read}; now {found}): "
                f"another promotion, rollback or canary change won; this {plan.pointer['action']} "
                f"({pointer_plan.state(plan.pointer)}) was NOT applied and nothing was changed") from None
        return plan.pointer

    def flip(self, *, version: str, by: str, reason: str, action: str = "promote",
             expect_live: str | None | bool = True, logical_date: str | None = None) -> dict[str, Any]:
        return self.commit(self.plan_flip(version=version, by=by, reason=reason, action=action,
                                          expect_live=expect_live, logical_date=logical_date))

    def plan_rollback(self, *, to: str | None, by: str, reason: str) -> FlipPlan:
        """The pointer back to `to` (default: the previous live version); clears a running canary."""
        reason = pointer_plan.operator_reason(reason)
        current = self.live()
        target = pointer_plan.rollback_target(current, to)
        return pointer_plan.point_to(current, version=target, uri=self.version_uri(target),
                                     manifest=self._servable(target), by=by, reason=reason, action="rollback")

    # ---- canary ---------------------------------------------------------------------------------

    def plan_canary(self, *, version: str, percent: float, by: str, reason: str,
                    expect_live: str | None | bool = True) -> FlipPlan:
        """Start a canary of `version` at `percent` of users, or change the percent of its running canary.

        expect_live as in plan_flip: the live version the candidate was gated against.
        """
        percent = pointer_plan.canary_percent(percent)
        pointer_plan.need_reason(reason, "a canary")  # not reason_problem: a retrain run's own reason quotes the gate
        manifest = self._servable(version)
        return pointer_plan.canary_at(self.live(), version=version, uri=self.version_uri(version), manifest=manifest,
                                      percent=percent, by=by, reason=reason, expect_live=expect_live)

    def plan_promote_canary(self, *, by: str, reason: str) -> FlipPlan:
        """The running canary becomes the live version (previous = the old live one); canary = null."""
        reason = pointer_plan.operator_reason(reason)
        current = pointer_plan.running_canary(self.live(), "promote")
        version = current.canary["version"]
        return pointer_plan.point_to(current, version=version, uri=self.version_uri(version),
                                     manifest=self._servable(version), by=by, reason=reason, action="promote-canary")

    def plan_abort_canary(self, *, by: str, reason: str) -> FlipPlan:
        """canary = null: every user is served the live version again, which stays as it is."""
        reason = pointer_plan.operator_reason(reason)
        return pointer_plan.amend(pointer_plan.running_canary(self.live(), "abort"), by=by, reason=reason,
                                  action="abort-canary", canary=None)

    def _servable(self, version: str) -> dict[str, Any]:
        """The manifest of a version that may serve traffic: registered and ONNX parity passed."""
        manifest = self.manifest(version)
        if manifest is None:
            raise RegistryError(f"version {version} is not registered ({self.version_uri(version)} has no manifest)")
        if not (manifest.get("parity") or {}).get("passed"):
            raise RegistryError(f"version {version} failed ONNX parity and can never be live")
        return manifest

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
