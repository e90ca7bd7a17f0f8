"""Follow features/live.json: serve each model with the newest published snapshot of its feature definitions.

Why: a model's own features/ are its training day's counts; the retrain DAG publishes a fresh
snapshot every day whatever the gate decides (feedloop.features.snapshots). A snapshot is verified as
strictly as a model before any request sees it (manifest sha256 from the pointer, every file's size
and sha256, the columns the feature definitions need, row counts, then the snapshot's sample
requests scored through each model that will use it, all finite). A pointer entry must name a
snapshot folder of the pod's own models bucket (model.Root, as for versions). Whatever goes wrong
(a refusal, or anything a malformed file raises) is counted by reason and retried with capped
backoff while the models keep the snapshot they have. Binding never goes backwards: a model only
moves to a snapshot with a later as_of than the one it scores with.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson

from feedloop.features import definitions as features
from feedloop.core.config import ServingSettings
from feedloop.serving import metrics
from feedloop.serving.model import (LoadedModel, Root, SnapshotRef, SwapRefused, first_line, folder_bucket,
                                    folder_key, pointer_entry)
from feedloop.serving.refusals import download
from feedloop.serving.snapshot import FILES, Snapshot, SnapshotError
from feedloop.core.storage import NOT_MODIFIED, ObjectStore

log = logging.getLogger("feedloop.serving")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SnapshotTarget:
    """One published snapshot the pointer names, for one feature-definition version."""

    id: str
    uri: str
    as_of: str
    manifest_sha256: str
    definition_version: str

    @classmethod
    def parse(cls, obj: Any, definition_version: str, root: Root) -> SnapshotTarget:
        fields = pointer_entry(obj, f"features/live.json snapshots[{definition_version[:40]}]",
                               ("id", "uri", "as_of", "manifest_sha256"), folder_of="id", root=root)
        return cls(fields["id"], fields["uri"], fields["as_of"], fields["manifest_sha256"], definition_version)

    @property
    def bucket(self) -> str:
        return folder_bucket(self.uri)

    def key(self, name: str) -> str:
        return folder_key(self.uri, name)


@dataclass(frozen=True)
class FeaturePointer:
    """features/live.json as a pod reads it: the newest snapshot per feature-definition version."""

    targets: dict[str, SnapshotTarget]
    seq: int

    @classmethod
    def parse(cls, body: bytes, root: Root) -> FeaturePointer:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise SwapRefused("bad_pointer", f"features/live.json is not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("snapshots"), dict):
            raise SwapRefused("bad_pointer", "features/live.json is not an object with a `snapshots` object")
        seq = obj.get("seq", 0)
        return cls({v: SnapshotTarget.parse(t, v, root) for v, t in obj["snapshots"].items()},
                   seq if isinstance(seq, int) and not isinstance(seq, bool) else 0)


@dataclass(frozen=True)
class PublishedSnapshot:
    ref: SnapshotRef
    snapshot: Snapshot
    sample_requests: list[dict[str, Any]]


def newer(target: SnapshotTarget, ref: SnapshotRef) -> bool:
    """Whether a model scoring with `ref` should move to `target`: a later as_of (or a republished same day)."""
    if target.id == ref.id:
        return False
    if ref.as_of is None or target.as_of > ref.as_of:
        return True
    return target.as_of == ref.as_of and ref.source == "published"


def load(target: SnapshotTarget, get: Callable[[str, str], bytes]) -> PublishedSnapshot:
    """Download and verify a published snapshot (everything but the warm-up); SwapRefused names the reason."""
    body = get(target.bucket, target.key(MANIFEST))
    digest = hashlib.sha256(body).hexdigest()
    if digest != target.manifest_sha256:
        raise SwapRefused("sha256_mismatch", f"{target.uri}{MANIFEST} has sha256 {digest[:12]}..., the pointer says "
                                             f"{target.manifest_sha256[:12]}...")
    manifest = _manifest(target, body)
    files = {}
    for name in FILES:
        expected = manifest["files"].get(name)
        if not isinstance(expected, dict):
            raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} lists no {name}")
        files[name] = _verified(target, name, get(target.bucket, target.key(name)), expected)
    try:
        snapshot = Snapshot.from_parquet(files)
    except (SnapshotError, OSError, ValueError) as exc:
        raise SwapRefused("bad_snapshot", f"{target.id}: {first_line(exc)}") from None
    ref = SnapshotRef(target.id, target.as_of, "published", target.uri)
    return PublishedSnapshot(ref, snapshot, manifest["sample_requests"])


def _manifest(target: SnapshotTarget, body: bytes) -> dict[str, Any]:
    try:
        manifest = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} is not a JSON object")
    missing = [k for k in ("snapshot_id", "as_of", "definition_version", "files", "sample_requests")
               if k not in manifest]
    if missing:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} lacks {', '.join(missing)}")
    said = {"snapshot_id": target.id, "as_of": target.as_of, "definition_version": target.definition_version}
    differ = [f"{k} {manifest[k]!r} (pointer: {v!r})" for k, v in said.items() if manifest[k] != v]
    if differ:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} does not describe what the pointer says: "
                                          f"{'; '.join(differ)}")
    if not isinstance(manifest["files"], dict):
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} field files: expected an object of file name -> "
                                          "{sha256, bytes, rows}")
    if not isinstance(manifest["sample_requests"], list) or not manifest["sample_requests"]:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} field sample_requests: expected a non-empty list "
                                          "of requests to warm up with")
    return manifest


def _verified(target: SnapshotTarget, name: str, body: bytes, expected: Mapping[str, Any]) -> bytes:
    """Size (a truncated file), then sha256 (other bytes), then the parquet row count the manifest records."""
    import pyarrow.parquet as pq

    if len(body) != expected.get("bytes"):
        raise SwapRefused("truncated", f"{target.uri}{name} has {len(body)} bytes, the manifest says "
                                       f"{expected.get('bytes')}: truncated or partly written")
    digest = hashlib.sha256(body).hexdigest()
    if digest != expected.get("sha256"):
        raise SwapRefused("sha256_mismatch", f"{target.uri}{name} has sha256 {digest[:12]}..., the manifest says "
                                             f"{str(expected.get('sha256'))[:12]}...")
    try:
        rows = pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise SwapRefused("bad_snapshot", f"{target.uri}{name} is not a Parquet file ({first_line(exc)})") from None
    if rows != expected.get("rows"):
        raise SwapRefused("bad_snapshot",
                          f"{target.uri}{name} holds {rows} rows, the manifest says {expected.get('rows')}")
    return body


def warm_up(model: LoadedModel, published: PublishedSnapshot) -> None:
    """Score the snapshot's sample requests through `model`: every score must be finite."""
    try:
        for r in published.sample_requests:
            items = list(r["item_ids"])
            authors = published.snapshot.authors(items, [None] * len(items))
            inputs = published.snapshot.inputs(tenant_id=r["tenant_id"], user_id=r["user_id"], surface=r["surface"],
                                               device=r["device"], request_ts=float(r["request_ts"]), item_ids=items,
                                               author_ids=authors)
            scores = model.score(features.derive(inputs, model.categories, model.feature_names))
            if not np.all(np.isfinite(scores)):
                raise SwapRefused("nan_scores", f"{published.ref.id}: {model.version} scored a sample request NaN or "
                                                "infinity with it")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SwapRefused("bad_manifest",
                          f"{published.ref.id}: a sample request is malformed ({first_line(exc)})") from None


@dataclass
class FeatureStatus:
    """What /version reports about features/live.json."""

    etag: str | None = None
    seq: int | None = None
    last_error: str | None = None
    pointer: FeaturePointer | None = None
    dirty: bool = False                   # the pointer (or the models) changed since the last full bind
    next_attempt: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # snapshot id -> why it was refused


class FeatureFollower:
    """Reads features/live.json once per poll and binds models to the snapshots it names."""

    def __init__(self, *, store: ObjectStore, bucket: str, key: str, snapshots: Root, cfg: ServingSettings,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.bucket, self.key = store, bucket, key
        self.snapshots, self.cfg, self.clock = snapshots, cfg, clock
        self.status = FeatureStatus()
        self._backoff = cfg.retry_initial_s
        self._loaded: dict[str, PublishedSnapshot] = {}

    def poll(self) -> None:
        st = self.status
        try:
            found = self.store.get_if_changed(self.bucket, self.key, st.etag)
        except Exception as exc:  # noqa: BLE001 - S3 down: the models keep their snapshots
            metrics.POLL_ERRORS.inc()
            st.last_error = f"cannot read s3://{self.bucket}/{self.key}: {first_line(exc)}"
            return
        st.last_error = None
        if found is None:
            st.last_error = f"s3://{self.bucket}/{self.key} does not exist yet (no snapshot published)"
            return
        if found is NOT_MODIFIED:
            return
        st.etag = found.etag
        try:
            pointer = FeaturePointer.parse(found.body, self.snapshots)
        except SwapRefused as refused:
            self._refused("pointer", refused)
            return
        log.info("features/live.json changed (seq %s): %s", pointer.seq,
                 ", ".join(f"{v}: {t.id}" for v, t in sorted(pointer.targets.items())))
        st.seq, st.pointer, st.dirty = pointer.seq, pointer, True
        named = {t.id for t in pointer.targets.values()}
        st.failures = {k: v for k, v in st.failures.items() if k in named}  # refusals of what it still names
        st.next_attempt, self._backoff = 0.0, self.cfg.retry_initial_s

    def due(self) -> bool:
        return self.status.dirty and self.clock() >= self.status.next_attempt

    def bind(self, models: Sequence[LoadedModel | None]) -> list[LoadedModel | None]:
        """Each model with the newest verified snapshot of its definitions (itself if none is newer)."""
        st = self.status
        pointer = st.pointer
        if pointer is None:
            return list(models)
        failed = waiting = False
        out: list[LoadedModel | None] = []
        for model in models:
            target = pointer.targets.get(model.definition_version) if model is not None else None
            if target is None or not newer(target, model.snapshot_ref):
                out.append(model)
                continue
            if target.id in st.failures and self.clock() < st.next_attempt:  # refused: wait for its backoff
                waiting = True
                out.append(model)
                continue
            try:
                published = self._obtain(target)
                warm_up(model, published)
            except SwapRefused as refused:
                self._refused(target.id, refused, model=model.version)
                failed = True
                out.append(model)
                continue
            except Exception as exc:  # noqa: BLE001 - a file nobody foresaw must not stop the watcher: refused too
                log.exception("loading feature snapshot %s failed unexpectedly", target.id)
                self._refused(target.id, SwapRefused("unexpected_error", f"{target.id}: {type(exc).__name__}: "
                                                                         f"{first_line(exc)}"), model=model.version)
                failed = True
                out.append(model)
                continue
            st.failures.pop(target.id, None)
            out.append(model.with_snapshot(published.snapshot, published.ref))
        live_ids = {t.id for t in pointer.targets.values()}
        self._loaded = {i: p for i, p in self._loaded.items() if i in live_ids}
        if failed:
            st.next_attempt = self.clock() + self._backoff
            log.warning("features/live.json seq %s not fully applied; retrying in %.0fs", pointer.seq, self._backoff)
            self._backoff = min(self._backoff * 2, self.cfg.retry_max_s)
        elif not waiting:
            st.dirty, self._backoff = False, self.cfg.retry_initial_s
        return out

    def _obtain(self, target: SnapshotTarget) -> PublishedSnapshot:
        if target.id in self._loaded:
            return self._loaded[target.id]
        t0 = time.perf_counter()
        published = load(target, partial(download, self.store))
        self._loaded[target.id] = published
        metrics.FEATURE_SNAPSHOT_SWAPS.inc()
        log.info("loaded feature snapshot %s (as of %s) in %.2fs (verified sha256, sizes, columns, rows)", target.id,
                 target.as_of, time.perf_counter() - t0)
        return published

    def _refused(self, what: str, refused: SwapRefused, *, model: str | None = None) -> None:
        metrics.FEATURE_SNAPSHOT_REFUSALS.labels(refused.reason).inc()
        self.status.failures[what] = f"{refused.reason}: {refused}"
        log.error("refused feature snapshot %s%s (%s): %s; the models keep the snapshots they have", what,
                  f" for {model}" if model else "", refused.reason, refused)

    def describe(self) -> dict[str, Any]:
        st = self.status
        return {"etag": st.etag, "seq": st.seq, "last_error": st.last_error,
                "snapshots": {v: t.id for v, t in st.pointer.targets.items()} if st.pointer else None,
                "retry_in_seconds": round(max(0.0, st.next_attempt - self.clock()), 3) if st.dirty else None,
                "refused": dict(st.failures)}
