"""The register step: a gated candidate (and its refit) written to the registry as immutable versions.

A version is its model, ONNX export, metrics, gate decision, report page and feature snapshot, then
manifest.json last (a version exists iff it does). The live pointer is not touched here: that is
feedloop.promotion.flip, after the optional human approval.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import orjson

from feedloop.contract.decisions import Evaluation, GateDecision, RegisteredVersion, Registration
from feedloop.core.config import Settings, repo_root
from feedloop.core.errors import EvaluationError, PromotionBlocked
from feedloop.promotion.candidate import Candidate, check_mode, load_candidate, staged_refit
from feedloop.promotion.registry import Registry, sha256
from feedloop.quality import overview
from feedloop.training import report

log = logging.getLogger(__name__)


def register_candidate(*, ds: str, mode: str = "gate", settings: Settings) -> Registration:
    """Write the immutable version (refused when ONNX parity failed), and its refit if one was made; their URIs.

    The refit (see steps.refit_candidate) is registered as a version of its own, linked to its evaluated twin
    (manifest `evaluated_twin`), carrying the twin's metrics and gate; it is the version that serves
    (`serving_version`). mode dry-run writes nothing to the registry: the report and the manifest a
    registration would write are staged next to each candidate (ranker/runs/<ds>/candidates/<version>/).
    """
    check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    s3 = cand.settings.s3
    registry = Registry(cand.store, s3.models_bucket)
    evaluation, parity, gate = (cand.staged(n) for n in ("evaluation.json", "parity.json", "gate.json"))
    if evaluation is None or parity is None or gate is None:
        raise EvaluationError(f"{cand.version}: evaluate, export and gate must run before register")
    decision = GateDecision.from_dict(gate)
    if not parity["passed"]:
        raise PromotionBlocked(f"{cand.version} is not registered: ONNX parity max |diff| {parity['max_abs_diff']} "
                               f"(scaled {parity.get('max_scaled_diff')}) exceeds {parity['threshold']} on "
                               f"{parity['rows']} holdout rows",
                               check="parity", version=cand.version, champion=decision.champion,
                               gate_uri=cand.stage_uri("gate.json"))
    evaluated = Evaluation.from_dict(evaluation)
    registered = _register_one(cand, registry, mode=mode, evaluation=evaluated, parity=parity, gate=gate)
    refit = staged_refit(cand)
    if refit is None:
        return Registration(registered, serving_version=cand.version)
    served = _register_one(refit, registry, mode=mode, evaluation=evaluated, parity=refit.staged("parity.json"),
                           gate=gate, extra={"evaluated_twin": cand.version, "refit": refit.train_metrics["refit"]})
    return Registration(registered, serving_version=refit.version, serving=served)


def _register_one(cand: Candidate, registry: Registry, *, mode: str, evaluation: Evaluation,
                  parity: dict[str, Any], gate: dict[str, Any], extra: dict[str, Any] | None = None
                  ) -> RegisteredVersion:
    """One immutable version (or, in a dry run, its staged report and manifest); a re-run returns the stored one.

    gate: the staged gate.json, stored with the version as it is."""
    ds, s3 = cand.ds, cand.settings.s3
    core = {
        "version": cand.version,
        "feature_manifest": cand.feature_manifest,
        "lineage": orjson.loads(cand.lineage),
        "params": cand.train_metrics.get("params", {}),
        "model_sha256": sha256(cand.model_text.encode()),
    }
    existing = registry.manifest(cand.version)
    if existing is not None:
        registry.verify_identity(existing, core)
        return _registered(registry, cand.version, existing)
    onnx_bytes = cand.store.get(s3.models_bucket, cand.stage_key("model.onnx")).body
    parity_figure = {k: v for k, v in parity.items() if k != "sample"}
    metrics = {**evaluation.to_dict(), "parity": parity_figure}
    decision = GateDecision.from_dict(gate)
    manifest = {
        **core,
        "logical_date": ds,
        "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "code_version": code_version(),
        "run_uri": cand.store.uri(s3.models_bucket, cand.run_key),
        "dataset_uri": cand.store.uri(s3.lake_bucket, cand.dataset_key),
        "parity": parity_figure,
        "gate": {"promotable": decision.promotable, "champion": decision.champion, "summary": decision.summary()},
        "metrics": {k: evaluation.candidate["overall"][k] for k in ("auc", "ndcg@10", "map", "mrr", "groups")},
        "sample": parity["sample"],
        **(extra or {}),
    }
    history = [{"version": v, "overall": registry.manifest(v)["metrics"]}
               for v in registry.versions() if v < cand.version][-cand.settings.promotion.report_history:]
    report_html = report.page(version=cand.version, metrics=metrics, gate=gate, manifest=manifest,
                              history=history, quality=overview.window_status(cand.store, s3.lake_bucket,
                                                                              core["lineage"]))
    if mode == "dry-run":
        cand.store.put(s3.models_bucket, cand.stage_key("report.html"), report_html)
        log.info("dry run: %s not registered; its report is staged at %s", cand.version,
                 cand.stage_uri("report.html"))
        return RegisteredVersion(cand.version, report_uri=cand.stage_uri("report.html"),
                                 manifest_uri=cand.stage("manifest.json", manifest), promotable=decision.promotable)
    files = {
        "model.txt": cand.model_text.encode(),
        "model.onnx": onnx_bytes,
        "metrics.json": _json(metrics),
        "gate.json": _json(gate),
        "report.html": report_html,
        **{f"features/{name}": body for name, body in _snapshot(cand).items()},
    }
    return _registered(registry, cand.version, registry.register(version=cand.version, files=files, manifest=manifest))


def _registered(registry: Registry, version: str, manifest: dict[str, Any]) -> RegisteredVersion:
    uri = registry.version_uri(version)
    return RegisteredVersion(version, report_uri=uri + "report.html", manifest_uri=uri + "manifest.json",
                             promotable=manifest["gate"]["promotable"], uri=uri)


def _snapshot(cand: Candidate) -> dict[str, bytes]:
    bucket, prefix = cand.settings.s3.lake_bucket, cand.dataset_key + "snapshot/"
    keys = sorted(cand.store.list_keys(bucket, prefix))
    if not keys:
        raise EvaluationError(f"no feature snapshot under {cand.store.uri(bucket, prefix)}: serving pods need it")
    return {k[len(prefix):]: cand.store.get(bucket, k).body for k in keys}


def code_version() -> str:
    """The git commit of this checkout if there is one, else the installed package version."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    if sha:
        return f"git:{sha}"
    try:
        return f"feedloop=={version('feedloop')}"
    except PackageNotFoundError:
        return "unknown"


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
