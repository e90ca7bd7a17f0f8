"""Which registered version a retrain_ranker run produced: what its Model report tab shows.

A run for logical date D stages its candidate under s3://<models>/ranker/runs/D/candidates/<version>/
and registers it as ranker/versions/<version>/ (version ids start with D). Its register task's
XCom names the version exactly; without one (the run has not got that far, or the version was
made outside Airflow) the versions of D are the answer, the newest registration first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedloop.promotion.registry import Registry


@dataclass(frozen=True)
class RunModel:
    ds: str
    version: str | None                 # the version whose report the tab shows
    report_key: str | None              # its report.html in the models bucket
    registered: tuple[str, ...]         # every registered version of ds
    staged: tuple[str, ...]             # candidates staged by training runs of ds
    note: str                           # how the version was chosen, or why there is none


def run_model(registry: Registry, ds: str, *, registered_by_run: str | None = None) -> RunModel:
    """The version to show for a run of logical date `ds`; registered_by_run = its register task's XCom."""
    staged = tuple(_names(registry, f"{registry.prefix}runs/{ds}/candidates/"))
    registered = tuple(v for v in _names(registry, f"{registry.prefix}versions/{ds}-") if registry.manifest(v))
    def shown(version: str, note: str) -> RunModel:
        return RunModel(ds, version, registry.version_key(version, "report.html"), registered, staged, note)

    if registered_by_run and registered_by_run in registered:
        return shown(registered_by_run, "registered by this run")
    if len(registered) == 1:
        return shown(registered[0], f"the version registered for {ds}")
    if registered:
        newest = max(registered, key=lambda v: _registered_at(registry, v))
        return shown(newest, f"{len(registered)} versions are registered for {ds}; the newest registration is shown")
    if staged:
        candidate = staged[-1]
        stage = f"{registry.prefix}runs/{ds}/candidates/{candidate}/"
        if registry.store.get(registry.bucket, stage + "report.html") is not None:  # a dry run stages its report
            return RunModel(ds, candidate, stage + "report.html", registered, staged,
                            f"candidate {candidate} was NOT registered (a dry run); this is the report it staged")
        return RunModel(ds, None, None, registered, staged, f"candidate {candidate} was trained for {ds} but not "
                                                            f"registered: {_staged_outcome(registry, stage)}")
    return RunModel(ds, None, None, registered, staged,
                    f"no model was trained for {ds} yet: the run has not reached training, validation refused "
                    "the data, or the window holds too few days (see the run's task logs)")


def _names(registry: Registry, prefix: str) -> list[str]:
    """The child folder names right under `prefix` (prefix may end inside a name: 'versions/<ds>-')."""
    root = prefix[:prefix.rfind("/") + 1]
    paginator = registry.store.client.get_paginator("list_objects_v2")
    return sorted(p["Prefix"][len(root):].rstrip("/")
                  for page in paginator.paginate(Bucket=registry.bucket, Prefix=prefix, Delimiter="/")
                  for p in page.get("CommonPrefixes", []))


def _registered_at(registry: Registry, version: str) -> str:
    manifest: dict[str, Any] = registry.manifest(version) or {}
    return manifest.get("registered_at") or ""


def _staged_outcome(registry: Registry, stage: str) -> str:
    parity = registry.store.get_json(registry.bucket, stage + "parity.json")
    if parity and not parity.get("passed"):  # type: ignore[union-attr]
        return (f"ONNX parity failed (max |diff| {parity.get('max_abs_diff')}, scaled "  # type: ignore[union-attr]
                f"{parity.get('max_scaled_diff')} > {parity.get('threshold')})")  # type: ignore[union-attr]
    gate = registry.store.get_json(registry.bucket, stage + "gate.json")
    if gate:
        return f"the run stopped after the gate ({gate.get('summary')})"  # type: ignore[union-attr]
    return "the run stopped before the gate (see its task logs)"
