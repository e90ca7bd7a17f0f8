"""Published feature snapshots: every retrain run's counts as of D + 1, which serving pods follow.

s3://<models>/features/snapshots/<as_of>-<hash>/   <entity>.parquet ... items.parquet
                                                   manifest.json (written last: a snapshot exists iff it does)
s3://<models>/features/live.json                   the newest snapshot per feature-definition version
s3://<models>/features/history/<seq>.json          every pointer ever written (feedloop.core.pointer)

Why a pointer of its own: a model used to serve the snapshot of its own training day forever, so
while the gate held newer candidates the counts the live model saw grew a day staler every day.
Each run publishes its snapshot whatever its candidate's fate; pods serve a model with the newest
published snapshot of the same feature-definition version (features.definition_version of the
model's feature_manifest), else the model's own registered features/.

Snapshot folders are immutable (If-None-Match) and named by their content, so re-running a day
writes nothing new. The pointer is replaced by compare-and-swap and never moves backwards: a
backfill of an older day publishes its folder but leaves the pointer on the newer one, and says so.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

import orjson

from feedloop.features import definitions as features
from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.contract.events import DEVICES, SURFACES
from feedloop.core.pointer import CasPointer, Read, next_seq
from feedloop.core.storage import ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

PREFIX = "features/"
SNAPSHOTS = f"{PREFIX}snapshots/"
MANIFEST = "manifest.json"
POINTER_SCHEMA = 1
SAMPLE_REQUESTS = 8        # per snapshot: what a pod scores through its model before it swaps the snapshot in
SAMPLE_CANDIDATES = 20
CAS_ATTEMPTS = 5           # another run publishing at the same moment: re-read and decide again


class FeatureSnapshotError(RuntimeError):
    """A snapshot cannot be published; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Published:
    """What one run did: the snapshot it stands for, whether it wrote it, and what became of the pointer."""

    snapshot_id: str
    uri: str
    as_of: str
    definition_version: str
    written: bool          # the folder was new (False: a re-run found it complete)
    pointer: str           # "moved" | "unchanged" (already live) | "kept-newer" (a backfill) | "dry-run"
    seq: int | None        # the pointer's seq after this run (None: no pointer)
    reason: str


def snapshot_key(snapshot_id: str, name: str = "") -> str:
    return f"{SNAPSHOTS}{snapshot_id}/{name}"


def pointer(store: ObjectStore, bucket: str) -> CasPointer:
    return CasPointer(store, bucket, PREFIX)


def publish(settings: Settings, *, day: date, by: str, dry_run: bool = False,
            store: ObjectStore | None = None) -> Published:
    """Publish datasets/ranker/<day>/snapshot/ (as of its window_end, day + 1); move features/live.json to it if newer.

    dry_run writes nothing and says what a real run would do.
    """
    store = store or ObjectStore.from_settings(settings)
    files, lineage, dataset_uri = _dataset_snapshot(settings, store, day)
    feature_manifest, as_of = lineage.get("features"), lineage.get("window_end")
    if not feature_manifest or not as_of:
        raise FeatureSnapshotError(f"{dataset_uri}lineage.json lacks its feature manifest or window_end: rebuild the "
                                   f"dataset of {day}")
    manifest = build_manifest(files, as_of=as_of,
                              definition_version=features.definition_version(feature_manifest),
                              dataset_uri=dataset_uri, dataset_content_hash=lineage.get("content_hash", ""),
                              tenants=settings.events.tenants)
    return publish_snapshot(store, settings.s3.models_bucket, files=files, manifest=manifest, by=by, dry_run=dry_run)


def publish_snapshot(store: ObjectStore, bucket: str, *, files: Mapping[str, bytes], manifest: Mapping[str, Any],
                     by: str, dry_run: bool = False) -> Published:
    """Write the folder (once) and move features/live.json to it unless it already serves a newer one."""
    sid = manifest["snapshot_id"]
    uri = store.uri(bucket, snapshot_key(sid))
    live = pointer(store, bucket)
    if dry_run:
        current = live.read()
        action, reason = decide(current.pointer if current else None, manifest)
        return Published(sid, uri, manifest["as_of"], manifest["definition_version"], False, "dry-run",
                         current.pointer["seq"] if current else None, f"dry run, nothing written: would be {action}: "
                                                                      f"{reason}")
    written = _write_folder(store, bucket, sid, files, manifest)
    manifest_sha = hashlib.sha256(store.get(bucket, snapshot_key(sid, MANIFEST)).body).hexdigest()
    entry = {"id": sid, "uri": uri, "as_of": manifest["as_of"], "manifest_sha256": manifest_sha,
             "dataset_uri": manifest["dataset_uri"]}
    for _ in range(CAS_ATTEMPTS):
        current = live.read()
        action, reason = decide(current.pointer if current else None, manifest)
        if action != "moved":
            log.info("features/live.json not moved to %s: %s", sid, reason)
            return Published(sid, uri, manifest["as_of"], manifest["definition_version"], written, action,
                             current.pointer["seq"] if current else None, reason)
        new = next_pointer(current, definition_version=manifest["definition_version"], entry=entry, by=by,
                           reason=reason)
        try:
            live.replace(current, new)
        except PreconditionFailed:
            log.warning("features/live.json changed while publishing %s; reading it again", sid)
            continue
        log.info("features/live.json -> %s (seq %s): %s", sid, new["seq"], reason)
        return Published(sid, uri, manifest["as_of"], manifest["definition_version"], written, "moved", new["seq"],
                         reason)
    raise FeatureSnapshotError(f"features/live.json changed under every one of {CAS_ATTEMPTS} attempts to publish "
                               f"{sid}: something is writing it in a loop; the snapshot folder {uri} is complete, "
                               "re-run this task to point at it")


def decide(current: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> tuple[str, str]:
    """Whether a snapshot moves the pointer: ("moved" | "unchanged" | "kept-newer", why). Never backwards."""
    sid, as_of, version = manifest["snapshot_id"], manifest["as_of"], manifest["definition_version"]
    entry = (current or {}).get("snapshots", {}).get(version)
    if entry is None:
        return "moved", f"the first snapshot of feature definitions {version} (as of {as_of})"
    if entry["id"] == sid:
        return "unchanged", f"{sid} is already live (seq {current['seq']}): nothing new to publish"
    if entry["as_of"] > as_of:
        return "kept-newer", (f"features/live.json serves {entry['id']} (as of {entry['as_of']}, seq {current['seq']}), "
                              f"newer than {sid}: a backfill never moves it backwards")
    return "moved", f"as of {as_of}, replacing {entry['id']} (as of {entry['as_of']})"


def next_pointer(current: Read | None, *, definition_version: str, entry: Mapping[str, Any], by: str,
                 reason: str) -> dict[str, Any]:
    """The pointer with `entry` as the newest snapshot of its definition version; the others stay."""
    snapshots = dict((current.pointer.get("snapshots") or {}) if current else {})
    previous = snapshots.get(definition_version)
    snapshots[definition_version] = dict(entry)
    return {"schema_version": POINTER_SCHEMA, "seq": next_seq(current), "snapshots": snapshots,
            "definition_version": definition_version, "snapshot": entry["id"],
            "previous": previous["id"] if previous else None, "published_at": _now(), "published_by": by,
            "action": "publish", "reason": reason}


def build_manifest(files: Mapping[str, bytes], *, as_of: str, definition_version: str, dataset_uri: str,
                   dataset_content_hash: str, tenants: list[str]) -> dict[str, Any]:
    """sha256, bytes, rows and columns per file, the sample requests, and the content-named snapshot id.

    Deterministic (no wall time in it): the same files give the same id and manifest in any run.
    """
    import pyarrow.parquet as pq

    described = {}
    for name, body in sorted(files.items()):
        parquet = pq.ParquetFile(io.BytesIO(body))
        described[name] = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                           "rows": parquet.metadata.num_rows, "columns": parquet.schema_arrow.names}
    digest = hashlib.sha256(orjson.dumps({"definition_version": definition_version, "as_of": as_of,
                                          "files": {n: d["sha256"] for n, d in described.items()}},
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"snapshot_id": f"{as_of}-{digest[:12]}", "as_of": as_of, "definition_version": definition_version,
            "dataset_uri": dataset_uri, "dataset_content_hash": dataset_content_hash, "files": described,
            "sample_requests": sample_requests(files, as_of=as_of, tenants=tenants)}


def sample_requests(files: Mapping[str, bytes], *, as_of: str, tenants: list[str]) -> list[dict[str, Any]]:
    """A few requests of known users and items: a pod scores them through its model before a swap."""
    import pyarrow.parquet as pq

    users = sorted(pq.read_table(io.BytesIO(files["user.parquet"]), columns=["user_id"])["user_id"].to_pylist())
    items = sorted(pq.read_table(io.BytesIO(files["items.parquet"]), columns=["item_id"])["item_id"].to_pylist())
    if not users or not items:
        raise FeatureSnapshotError(f"the snapshot as of {as_of} knows no users or no items: nothing a pod could "
                                   "warm up with; check the dataset's events and the item catalog")
    day = datetime.fromisoformat(as_of).replace(tzinfo=timezone.utc)
    out = []
    n = min(SAMPLE_CANDIDATES, len(items))
    for k in range(SAMPLE_REQUESTS):
        out.append({"tenant_id": tenants[k % len(tenants)], "user_id": users[k % len(users)],
                    "surface": SURFACES[k % len(SURFACES)], "device": DEVICES[k % len(DEVICES)],
                    "request_ts": (day + timedelta(hours=k)).timestamp(),
                    "item_ids": [items[(k * n + j) % len(items)] for j in range(n)]})
    return out


def _dataset_snapshot(settings: Settings, store: ObjectStore, day: date) -> tuple[dict[str, bytes], dict, str]:
    """The snapshot files and lineage of the dataset of `day`, as build_dataset wrote them."""
    bucket, prefix = settings.s3.lake_bucket, lake.dataset_prefix(day)
    dataset_uri = store.uri(bucket, prefix)
    lineage = store.get_json(bucket, prefix + "lineage.json")
    keys = sorted(store.list_keys(bucket, prefix + "snapshot/"))
    if lineage is None or not keys:
        raise FeatureSnapshotError(f"no complete dataset at {dataset_uri} (lineage.json and snapshot/ are written "
                                   f"by build_dataset): run build_dataset for {day} first")
    files = {k[len(prefix + "snapshot/"):]: store.get(bucket, k).body for k in keys}
    expected = {f"{e.name}.parquet" for e in features.ENTITIES} | {"items.parquet"}
    if set(files) != expected:
        raise FeatureSnapshotError(f"{dataset_uri}snapshot/ holds {sorted(files)}, expected {sorted(expected)}: "
                                   f"rebuild the dataset of {day}")
    return files, lineage, dataset_uri


def _write_folder(store: ObjectStore, bucket: str, sid: str, files: Mapping[str, bytes],
                  manifest: Mapping[str, Any]) -> bool:
    """Every file once, the manifest last; False if the folder was already complete (a re-run)."""
    if store.get(bucket, snapshot_key(sid, MANIFEST)) is not None:
        return False
    for name, body in sorted(files.items()):
        try:
            store.put(bucket, snapshot_key(sid, name), body, if_none_match=True)
        except PreconditionFailed:  # left by an interrupted run: the id names the content, so it must match
            if store.get(bucket, snapshot_key(sid, name)).body != body:
                raise FeatureSnapshotError(f"{store.uri(bucket, snapshot_key(sid, name))} exists with other bytes "
                                           "than its content-named folder says: someone wrote into it; delete the "
                                           "folder and re-run") from None
    try:
        store.put_json(bucket, snapshot_key(sid, MANIFEST), manifest, if_none_match=True)
    except PreconditionFailed:  # a concurrent run of the same day finished first
        return False
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
