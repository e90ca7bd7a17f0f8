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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from feedloop.config import Settings
from feedloop.storage import ObjectStore, PreconditionFailed

PREFIX = "ranker/"
MANIFEST = "manifest.json"
POINTER_SCHEMA = 1
IDENTITY_KEYS = ("version", "feature_manifest", "lineage", "params")  # plus the sha256 of model.txt


class RegistryError(RuntimeError):
    """A registry operation refused or lost; the message says what to do."""


class VersionConflict(RegistryError):
    """A version id is taken by different content."""


class PointerRaceLost(RegistryError):
    """live.json changed between read and write: another flip won, nothing was changed."""


@dataclass(frozen=True)
class Live:
    pointer: dict[str, Any]
    etag: str

    @property
    def version(self) -> str:
        return self.pointer["version"]


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
    def __init__(self, store: ObjectStore, bucket: str, *, prefix: str = PREFIX):
        self.store, self.bucket, self.prefix = store, bucket, prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(ObjectStore.from_settings(settings), settings.s3.models_bucket)

    # ---- versions -------------------------------------------------------------------------------

    def version_key(self, version: str, name: str = "") -> str:
        return f"{self.prefix}versions/{version}/{name}"

    def version_uri(self, version: str) -> str:
        return self.store.uri(self.bucket, self.version_key(version))

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
        root = f"{self.prefix}versions/"
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
        return f"{self.prefix}live.json"

    def live(self) -> Live | None:
        import orjson

        found = self.store.get(self.bucket, self.live_key)
        return None if found is None else Live(orjson.loads(found.body), found.etag)

    def plan_flip(self, *, version: str, by: str, reason: str, action: str = "promote",
                  expect_live: str | None | bool = True) -> FlipPlan:
        """Read live.json once and prepare the pointer to `version`.

        expect_live: True = any current version; None = there must be no pointer yet; a version id =
        the live version must still be that one (the champion the candidate was gated against).
        """
        manifest = self.manifest(version)
        if manifest is None:
            raise RegistryError(f"version {version} is not registered ({self.version_uri(version)} has no manifest)")
        if not (manifest.get("parity") or {}).get("passed"):
            raise RegistryError(f"version {version} failed ONNX parity and can never be live")
        current = self.live()
        live_version = current.version if current else None
        if expect_live is not True and live_version != expect_live:
            raise PointerRaceLost(f"live model is {live_version or '(none)'}, not {expect_live or '(none)'} as "
                                  f"when {version} was gated; nothing was changed: re-run to gate against it")
        pointer = {
            "schema_version": POINTER_SCHEMA,
            "seq": (current.pointer.get("seq", 0) + 1) if current else 1,
            "version": version,
            "uri": self.version_uri(version),
            "sha256": manifest["artifacts"]["model.onnx"]["sha256"],
            "promoted_at": _now(),
            "promoted_by": by,
            "previous": live_version,
            "reason": reason,
            "action": action,
            "canary": None,
        }
        return FlipPlan(current, pointer)

    def commit(self, plan: FlipPlan) -> dict[str, Any]:
        """Write the planned pointer iff live.json is still what the plan read; then its history entry."""
        try:
            if plan.current is None:
                self.store.put_json(self.bucket, self.live_key, plan.pointer, if_none_match=True)
            else:
                self._record(plan.current.pointer)  # repairs an entry a crash may have skipped
                self.store.put_json(self.bucket, self.live_key, plan.pointer, if_match=plan.current.etag)
        except PreconditionFailed:
            now = self.live()
            raise PointerRaceLost(
                f"live.json changed since it was read (expected {plan.pointer['previous'] or 'no pointer'}, now "
                f"{now.version if now else 'none'}): another promotion or rollback won; {plan.pointer['version']} "
                "was NOT made live and nothing was changed") from None
        self._record(plan.pointer)
        return plan.pointer

    def flip(self, *, version: str, by: str, reason: str, action: str = "promote",
             expect_live: str | None | bool = True) -> dict[str, Any]:
        return self.commit(self.plan_flip(version=version, by=by, reason=reason, action=action,
                                          expect_live=expect_live))

    def plan_rollback(self, *, to: str | None, by: str, reason: str) -> FlipPlan:
        """The pointer back to `to` (default: the previous live version), through the same compare-and-swap."""
        if not reason.strip():
            raise RegistryError("a rollback needs a reason")
        current = self.live()
        if current is None:
            raise RegistryError("no live model: nothing to roll back")
        target = to or current.pointer.get("previous")
        if not target:
            raise RegistryError(f"live model {current.version} has no previous version; give the target version")
        if target == current.version:
            raise RegistryError(f"{target} is already live")
        return self.plan_flip(version=target, by=by, reason=reason, action="rollback", expect_live=current.version)

    # ---- history --------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Every pointer ever written, oldest first (the live one included even if its entry was lost)."""
        current = self.live()
        if current is not None:
            self._record(current.pointer)
        keys = sorted(self.store.list_keys(self.bucket, f"{self.prefix}history/"))
        return [self.store.get_json(self.bucket, k) for k in keys]

    def _record(self, pointer: dict[str, Any]) -> None:
        key = f"{self.prefix}history/{pointer['seq']:010d}.json"
        try:
            self.store.put_json(self.bucket, key, pointer, if_none_match=True)
        except PreconditionFailed:
            pass  # already recorded: entries are immutable


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entries(pointers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as an operator reads them: when, old -> new, who, why."""
    return [{"seq": p["seq"], "at": p["promoted_at"], "from": p.get("previous"), "to": p["version"],
             "action": p.get("action"), "by": p.get("promoted_by"), "reason": p.get("reason")} for p in pointers]
