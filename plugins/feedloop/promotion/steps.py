"""The promotion steps of the retrain DAG: evaluate -> export -> gate -> register -> flip (and rollback).

Each step takes the logical date (and small dicts), returns URIs and small dicts, and is
idempotent per logical date: its output is staged under s3://<models>/ranker/runs/<ds>/candidates/
<version>/ and a re-run returns what is there. The version id is "<ds>-<hash of model.txt, feature
manifest and data lineage>", so re-running a day with the same inputs yields the same version and a
retrained model a new one. The registry writes the immutable version first and the pointer last.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from feedloop.promotion import gate as gate_mod
from feedloop.core.errors import EvaluationError, NotApproved, PromotionBlocked
from feedloop.core.config import PromotionSettings, Settings, load_settings
from feedloop.promotion.registry import (CanaryConflict, FlipPlan, Live, PointerRaceLost, Registry, RegistryError,
                               sha256, version_day)
from feedloop.core.storage import ObjectStore

log = logging.getLogger(__name__)

HOLDOUT_COLUMNS = ("request_id", "label", "label_binary", "item_popularity", "weight", "explore")
MODES = ("gate", "force", "dry-run")  # the retrain param promotion_mode (feedloop.airflow.params)
RUNS = "ranker/runs/"  # a candidate's workspace: RUNS<ds>/candidates/<version>/
SAMPLE_ROWS = 8  # rows + scores saved in the manifest so a pod can check a model it loaded


@dataclass(frozen=True)
class Candidate:
    """The trained model of one logical date, as the train step left it."""

    ds: str
    settings: Settings
    model_text: str
    feature_manifest: dict[str, Any]
    train_metrics: dict[str, Any]
    lineage: bytes

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings)

    @property
    def run_key(self) -> str:
        return f"{RUNS}{self.ds}/"

    @property
    def dataset_key(self) -> str:
        return f"datasets/ranker/{self.ds}/"

    @cached_property
    def version(self) -> str:
        digest = sha256(self.model_text.encode() + b"\0" + _canonical(self.feature_manifest) + b"\0" + self.lineage)
        return f"{self.ds}-{digest[:10]}"

    def stage_key(self, name: str) -> str:
        return f"{self.run_key}candidates/{self.version}/{name}"

    def stage_uri(self, name: str) -> str:
        return self.store.uri(self.settings.s3.models_bucket, self.stage_key(name))

    def staged(self, name: str) -> Any:
        return self.store.get_json(self.settings.s3.models_bucket, self.stage_key(name))

    def stage(self, name: str, obj: Any) -> str:
        self.store.put_json(self.settings.s3.models_bucket, self.stage_key(name), obj)
        return self.stage_uri(name)


def load_candidate(*, ds: str, settings: Settings | None = None) -> Candidate:
    settings = settings or load_settings()
    store = ObjectStore.from_settings(settings)
    models, lake = settings.s3.models_bucket, settings.s3.lake_bucket
    run = f"{RUNS}{ds}/"
    names = ("model.txt", "feature_manifest.json", "train_metrics.json")
    found = {name: store.get(models, run + name) for name in names}
    missing = [store.uri(models, run + n) for n, v in found.items() if v is None]
    if missing:
        raise EvaluationError(f"no trained model for {ds}: missing {', '.join(missing)} (run the train step first)")
    lineage = store.get(lake, f"datasets/ranker/{ds}/lineage.json")
    return Candidate(ds=ds, settings=settings, model_text=found["model.txt"].body.decode(),
                     feature_manifest=orjson.loads(found["feature_manifest.json"].body),
                     train_metrics=orjson.loads(found["train_metrics.json"].body),
                     lineage=lineage.body if lineage else b"{}")


# ---- steps ---------------------------------------------------------------------------------------

def evaluate_candidate(*, ds: str, settings: Settings | None = None) -> dict[str, Any]:
    """Candidate, champion (the version live at the end of ds) and popularity baseline on the same holdout rows.

    A staged evaluation is reused while the champion of ds and the live version are what they were
    (or the candidate itself went live since); after another pointer change it is evaluated again,
    and so is one staged before the counterfactual figures existed (no `paired` block).
    """
    cand = load_candidate(ds=ds, settings=settings)
    evaluation = cand.staged("evaluation.json")
    registry = Registry(cand.store, cand.settings.s3.models_bucket)
    live = registry.live()
    live_version = live.version if live else None
    champion = registry.champion_of(date.fromisoformat(ds))
    if evaluation is None or "paired" not in evaluation or (live_version != cand.version and (
            (_version_of(evaluation["champion"]), evaluation.get("live")) != (champion, live_version))):
        evaluation = _evaluate(cand, champion=champion, live=live_version)
        cand.stage("evaluation.json", evaluation)
    return {"version": cand.version, "evaluation_uri": cand.stage_uri("evaluation.json"),
            "champion": _version_of(evaluation["champion"]),
            "overall": {k: evaluation["candidate"]["overall"][k] for k in ("auc", "ndcg@10")}}


def export_candidate(*, ds: str, settings: Settings | None = None) -> dict[str, Any]:
    """ONNX export and its parity against LightGBM on a holdout sample (the figure is recorded, not raised)."""
    cand = load_candidate(ds=ds, settings=settings)
    parity = cand.staged("parity.json") or _export(cand)
    log.info("ONNX parity of %s: max |diff| %s on %s rows (threshold %s)", cand.version, parity["max_abs_diff"],
             parity["rows"], parity["threshold"])
    return {"version": cand.version, "onnx_uri": cand.stage_uri("model.onnx"),
            **{k: v for k, v in parity.items() if k != "sample"}}


def _export(cand: Candidate) -> dict[str, Any]:
    """model.onnx and parity.json staged for the candidate; the parity figure with its sample rows."""
    from feedloop.training import export

    cfg = cand.settings.promotion
    columns = _holdout(cand.store, cand.settings.s3.lake_bucket, cand.dataset_key, _feature_names(cand.feature_manifest))
    matrix = _matrix(columns, cand.feature_manifest, what=f"candidate {cand.version}")
    rows = np.linspace(0, len(matrix) - 1, min(len(matrix), cfg.parity_sample_rows)).astype(int)
    sample = matrix[np.unique(rows)]  # spread over the whole day, not its first lists
    onnx_bytes = export.to_onnx(model_text=cand.model_text, n_features=matrix.shape[1])
    result = export.check_parity(model_text=cand.model_text, onnx_bytes=onnx_bytes, matrix=sample,
                                 threshold=cfg.parity_max_abs_diff)
    cand.store.put(cand.settings.s3.models_bucket, cand.stage_key("model.onnx"), onnx_bytes)
    parity = {**result.to_dict(), "onnx_sha256": sha256(onnx_bytes), "sample": _sample(cand, matrix)}
    cand.stage("parity.json", parity)
    return parity


def refit_candidate(*, ds: str, mode: str = "gate", settings: Settings | None = None) -> dict[str, Any]:
    """After the gate: the evaluated candidate's recipe refit on the whole window, exported and parity-checked.

    The refit is staged as a candidate of its own (candidates/<refit version>/) and named in the evaluated
    twin's refit.json; register then makes it the version that serves, linked to its twin, whose metrics
    the gate judged. Nothing to refit when train.refit is off or the gate held the candidate (outside
    promotion_mode=force). Idempotent: the same inputs give the same model bytes and version.
    """
    from feedloop.training import train

    _check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    decision = cand.staged("gate.json")
    if decision is None:
        raise EvaluationError(f"{cand.version} has no gate decision yet: run gate_candidate for {ds} first")
    if not cand.settings.train.refit:
        return {"version": cand.version, "refit": None, "why": "train.refit is off: the evaluated model serves"}
    if not decision["promotable"] and mode != "force":
        return {"version": cand.version, "refit": None, "why": "the gate held the candidate: nothing of it serves"}
    record = cand.staged("refit.json")
    if record is None:
        model_text, result = train.refit(cand.settings, day=date.fromisoformat(ds),
                                         rounds=int(cand.train_metrics["best_iteration"]),
                                         objective=cand.train_metrics.get("objective"))
        twin = Candidate(ds=ds, settings=cand.settings, model_text=model_text, feature_manifest=cand.feature_manifest,
                         train_metrics={**cand.train_metrics, "refit": asdict(result)}, lineage=cand.lineage)
        twin.store.put(twin.settings.s3.models_bucket, twin.stage_key("model.txt"), model_text.encode())
        twin.stage("train_metrics.json", twin.train_metrics)
        parity = _export(twin)
        record = {"version": twin.version, "evaluated": cand.version, **asdict(result),
                  **{k: parity[k] for k in ("passed", "max_abs_diff", "rows", "threshold")}}
        cand.stage("refit.json", record)
    (log.info if record["passed"] else log.warning)(
        "refit of %s: %s (%s rounds on %s rows), ONNX parity %s", cand.version, record["version"], record["rounds"],
        record["rows"], "passed" if record["passed"] else f"FAILED ({record['max_abs_diff']}): the evaluated model serves")
    return {"version": cand.version, "refit": record["version"], **{k: record[k] for k in ("rounds", "rows", "passed")}}


def _refit_of(cand: Candidate) -> Candidate | None:
    """The staged refit of an evaluated candidate, if one passed ONNX parity."""
    record = cand.staged("refit.json")
    if record is None or not record["passed"]:
        return None
    bucket = cand.settings.s3.models_bucket
    key = f"{cand.run_key}candidates/{record['version']}/"
    model_text = cand.store.get(bucket, key + "model.txt").body.decode()
    return Candidate(ds=cand.ds, settings=cand.settings, model_text=model_text, feature_manifest=cand.feature_manifest,
                     train_metrics=cand.store.get_json(bucket, key + "train_metrics.json"), lineage=cand.lineage)


def gate_candidate(*, ds: str, overrides: dict[str, Any] | None = None, mode: str = "gate",
                   settings: Settings | None = None) -> dict[str, Any]:
    """The gate decision with every number behind it, saved as gate.json; overrides = manual-run params.

    Also says whether a human must approve the flip (promotion.approval_margin, promotion.inconclusive;
    see approval()). `comparison` is the headline candidate-vs-champion figure as data (gate.Comparison).
    """
    _check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    evaluation, parity = cand.staged("evaluation.json"), cand.staged("parity.json")
    if evaluation is None:
        raise EvaluationError(f"{cand.version} has no evaluation yet: run evaluate_candidate for {ds} first")
    if "paired" not in evaluation:
        raise EvaluationError(f"{cand.stage_uri('evaluation.json')} predates the counterfactual evaluation: "
                              f"run evaluate_candidate for {ds} again (it evaluates afresh)")
    limits = thresholds(settings=cand.settings, overrides=overrides)
    decision = gate_mod.decide({**_gated(evaluation["candidate"], cand.version), "parity": parity},
                               evaluation["champion"], limits, paired=evaluation["paired"])
    record = decision.to_dict()
    uri = cand.stage("gate.json", record)
    (log.info if decision.promotable else log.warning)("gate: %s", decision.summary())
    return {"version": cand.version, "promotable": decision.promotable, "champion": decision.champion,
            "summary": decision.summary(), "gate_uri": uri, "mode": mode, "comparison": record["comparison"],
            "approval": approval(evaluation, compare=limits.compare, margin=cand.settings.promotion.approval_margin,
                                 mode=mode, promotable=decision.promotable, inconclusive=decision.asks_approval)}


def register_candidate(*, ds: str, mode: str = "gate", settings: Settings | None = None) -> dict[str, Any]:
    """Write the immutable version (refused when ONNX parity failed), and its refit if one was made; their URIs.

    The refit (see refit_candidate) is registered as a version of its own, linked to its evaluated twin
    (manifest `evaluated_twin`), carrying the twin's metrics and gate; it is the version that serves
    (`serving_version`). mode dry-run writes nothing to the registry: the report and the manifest a
    registration would write are staged next to each candidate (ranker/runs/<ds>/candidates/<version>/).
    """
    _check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    s3 = cand.settings.s3
    registry = Registry(cand.store, s3.models_bucket)
    evaluation, parity, decision = (cand.staged(n) for n in ("evaluation.json", "parity.json", "gate.json"))
    if evaluation is None or parity is None or decision is None:
        raise EvaluationError(f"{cand.version}: evaluate, export and gate must run before register")
    if not parity["passed"]:
        raise PromotionBlocked(f"{cand.version} is not registered: ONNX parity max |diff| {parity['max_abs_diff']} "
                               f"exceeds {parity['threshold']} on {parity['rows']} holdout rows",
                               check="parity", version=cand.version, champion=decision["champion"],
                               gate_uri=cand.stage_uri("gate.json"))
    registered = _register_one(cand, registry, mode=mode, evaluation=evaluation, parity=parity, decision=decision)
    refit = _refit_of(cand)
    if refit is None:
        return {**registered, "serving_version": cand.version}
    served = _register_one(refit, registry, mode=mode, evaluation=evaluation, parity=refit.staged("parity.json"),
                           decision=decision, extra={"evaluated_twin": cand.version,
                                                     "refit": refit.train_metrics["refit"]})
    return {**registered, "serving_version": refit.version, "serving": served}


def _register_one(cand: Candidate, registry: Registry, *, mode: str, evaluation: dict[str, Any],
                  parity: dict[str, Any], decision: dict[str, Any], extra: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """One immutable version (or, in a dry run, its staged report and manifest); a re-run returns the stored one."""
    from feedloop.training import report
    from feedloop.quality import overview

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
    metrics = {**evaluation, "parity": parity_figure}
    manifest = {
        **core,
        "logical_date": ds,
        "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "code_version": code_version(),
        "run_uri": cand.store.uri(s3.models_bucket, cand.run_key),
        "dataset_uri": cand.store.uri(s3.lake_bucket, cand.dataset_key),
        "parity": parity_figure,
        "gate": {k: decision[k] for k in ("promotable", "champion", "summary")},
        "metrics": {k: evaluation["candidate"]["overall"][k] for k in ("auc", "ndcg@10", "map", "mrr", "groups")},
        "sample": parity["sample"],
        **(extra or {}),
    }
    history = [{"version": v, "overall": registry.manifest(v)["metrics"]}
               for v in registry.versions() if v < cand.version][-cand.settings.promotion.report_history:]
    report_html = report.page(version=cand.version, metrics=metrics, gate=decision, manifest=manifest,
                              history=history, quality=overview.window_status(cand.store, s3.lake_bucket,
                                                                              core["lineage"]))
    if mode == "dry-run":
        cand.store.put(s3.models_bucket, cand.stage_key("report.html"), report_html)
        log.info("dry run: %s not registered; its report is staged at %s", cand.version,
                 cand.stage_uri("report.html"))
        return {"version": cand.version, "registered": False, "dry_run": True, "promotable": decision["promotable"],
                "report_uri": cand.stage_uri("report.html"), "manifest_uri": cand.stage("manifest.json", manifest)}
    files = {
        "model.txt": cand.model_text.encode(),
        "model.onnx": onnx_bytes,
        "metrics.json": _json(metrics),
        "gate.json": _json(decision),
        "report.html": report_html,
        **{f"features/{name}": body for name, body in _snapshot(cand).items()},
    }
    return _registered(registry, cand.version, registry.register(version=cand.version, files=files, manifest=manifest))


def flip_pointer(*, ds: str, gate: dict[str, Any], promoted_by: str, canary_percent: float | None = None,
                 mode: str = "gate", force_reason: str = "", settings: Settings | None = None) -> dict[str, Any]:
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

    A flip the gate said needs a human (gate["approval"]["required"]) goes ahead only on the Approve
    recorded in approval.json (record_approval), whoever runs it: a flip cleared and re-run after a
    Reject or a timeout raises NotApproved, one with no recorded answer PromotionBlocked; the approver
    is named in the pointer's reason.
    """
    _check_mode(mode)
    settings = settings or load_settings()
    registry = Registry.from_settings(settings)
    version = gate["version"]
    percent = settings.promotion.canary_percent if canary_percent is None else canary_percent
    if mode == "dry-run":
        return _dry_run_flip(registry, gate, ds=ds, percent=percent)
    forced = mode == "force" and not gate["promotable"]
    if forced and len(force_reason.strip()) < 3:
        raise PromotionBlocked(f"promotion_mode=force for {version} needs a force_reason; live model unchanged")
    if not gate["promotable"] and not forced:
        report_uri = registry.store.uri(registry.bucket, registry.version_key(version, "report.html"))
        raise PromotionBlocked(f"promotion of {version} for {ds} blocked, live model unchanged: {gate['summary']}. "
                               f"Report: {report_uri}", check="gate", version=version, champion=gate["champion"],
                               gate_uri=gate.get("gate_uri"), report_uri=report_uri)
    approval = _recorded_approval(registry, ds=ds, gate=gate)
    serving = _serving_version(registry, ds=ds, evaluated=version)
    live = registry.live()
    if live is not None and live.version == serving:
        return {"flipped": False, "canary": False, "version": serving, "evaluated": version,
                "previous": live.pointer["previous"], "seq": live.pointer["seq"]}
    if live is not None and (version_day(live.version) or date.min) > date.fromisoformat(ds):
        if mode != "force":
            return _held_back(registry, gate, ds=ds, live=live, serving=serving)
        forced = True
        if len(force_reason.strip()) < 3:
            raise PromotionBlocked(f"promotion_mode=force for {version} needs a force_reason; live model unchanged")
    reason = _flip_reason(ds, gate, forced=forced, force_reason=force_reason, approval=approval)
    # The compare-and-swap expects the version that was live when the candidate was evaluated: any pointer
    # change since (another flip, a rollback) refuses this one, and a re-run evaluates again.
    expected = _live_when_evaluated(registry, ds=ds, version=version, default=gate["champion"])
    try:
        if percent and live is not None:
            return _start_canary(registry, live, version=serving, percent=percent, by=promoted_by, reason=reason,
                                 champion=expected)
        pointer = registry.flip(version=serving, by=promoted_by, reason=reason, expect_live=expected,
                                action="force" if forced else "promote", logical_date=ds)
    except CanaryConflict as exc:  # waits for an operator: a retry would be refused again
        raise PromotionBlocked(f"{version} for {ds} not promoted: {exc}; then clear this task", check="canary",
                               version=version, champion=gate["champion"]) from exc
    log.info("live model is now %s (was %s)%s", serving, pointer["previous"], " FORCED past the gate" if forced else "")
    return {"flipped": True, "canary": False, "version": serving, "evaluated": version, "previous": pointer["previous"],
            "seq": pointer["seq"], "action": pointer["action"]}


def _held_back(registry: Registry, gate: dict[str, Any], *, ds: str, live: Live, serving: str) -> dict[str, Any]:
    """A backfilled day's candidate never replaces a model trained on a later day: record what it would have done."""
    version = gate["version"]
    record = {"flipped": False, "canary": False, "held_back": True, "version": serving, "evaluated": version,
              "live": live.version,
              "would": "make it live (the gate passed)" if gate["promotable"] else "nothing (the gate held it)",
              "why": f"live model {live.version} was trained on a later day than {ds}: a backfill never moves the "
                     "live pointer back to an older day's model (promotion_mode=force does, with a force_reason)"}
    registry.store.put_json(registry.bucket, f"{RUNS}{ds}/candidates/{version}/flip.json", record)
    log.warning("%s for %s: pointer left at %s; it would %s", version, ds, live.version, record["would"])
    return record


def _recorded_approval(registry: Registry, *, ds: str, gate: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded Approve of a flip that needs one (None when none is needed); refuses any other answer.

    Why the record on S3 and not the approve task's XCom: the flip can run without the approve step
    having approved (cleared and re-run after a Reject, or approve marked success by hand); the record
    is what the human decided, whatever ran since.
    """
    if not (gate.get("approval") or {}).get("required"):
        return None
    version = gate["version"]
    key = _approval_key(ds, version)
    record = registry.store.get_json(registry.bucket, key)
    if record is None:
        raise PromotionBlocked(f"{version} for {ds} needs a human's Approve and none is recorded "
                               f"({registry.store.uri(registry.bucket, key)} does not exist); live model unchanged: "
                               "clear the approve task to ask again, or re-run with promotion_mode=force",
                               check="approval", version=version, champion=gate["champion"])
    if record["decision"] != "approved":
        answer = (f"rejected by {record['by']}" if record["decision"] == "rejected"
                  else "not approved before the approval timeout (no answer counts as Reject)")
        raise NotApproved(f"{version} for {ds} was {answer} at {record['at']}; live model unchanged. To promote "
                          "it, clear the approve task to ask again")
    return record


def _approval_key(ds: str, version: str) -> str:
    return f"{RUNS}{ds}/candidates/{version}/approval.json"


def _serving_version(registry: Registry, *, ds: str, evaluated: str) -> str:
    """The refit of the evaluated version when one was registered (see refit_candidate), else the version itself."""
    refit = registry.store.get_json(registry.bucket, f"{RUNS}{ds}/candidates/{evaluated}/refit.json")
    if refit and refit["passed"] and registry.manifest(refit["version"]) is not None:
        return refit["version"]
    return evaluated


def _live_when_evaluated(registry: Registry, *, ds: str, version: str, default: str | None) -> str | None:
    evaluation = registry.store.get_json(registry.bucket, f"{RUNS}{ds}/candidates/{version}/evaluation.json")
    return evaluation["live"] if evaluation and "live" in evaluation else default


def _flip_reason(ds: str, gate: dict[str, Any], *, forced: bool, force_reason: str,
                 approval: dict[str, Any] | None) -> str:
    """The pointer's reason: the gate summary, and who overrode or approved it."""
    if forced:
        return f"retrain {ds}: FORCED despite the gate: {force_reason.strip()} (gate: {gate['summary']})"
    approved = f"; approved by {approval['by']}" if approval and approval.get("decision") == "approved" else ""
    return f"retrain {ds}: {gate['summary']}{approved}"


def _dry_run_flip(registry: Registry, gate: dict[str, Any], *, ds: str, percent: float) -> dict[str, Any]:
    """What a gate run would do to live.json now; nothing is written."""
    live = registry.live()
    version = gate["version"]
    if not gate["promotable"]:
        would = "nothing: the gate blocks it"
    elif live is not None and live.version == version:
        would = "nothing: it is already live"
    elif (gate.get("approval") or {}).get("within_margin"):
        would = "wait for a human's approval (within promotion.approval_margin), then promote it"
    elif (gate.get("approval") or {}).get("inconclusive"):
        would = "wait for a human's approval (inconclusive against the champion), then promote it"
    elif percent and live is not None:
        would = f"start a canary at {percent:g}%"
    else:
        would = "make it live"
    log.info("dry run for %s: %s would %s (live: %s); live.json unchanged", ds, version, would,
             live.version if live else "none")
    return {"flipped": False, "canary": False, "dry_run": True, "version": version, "would": would,
            "live": live.version if live else None, "summary": gate["summary"]}


def _start_canary(registry: Registry, live: Live, *, version: str, percent: float, by: str, reason: str,
                  champion: str | None) -> dict[str, Any]:
    running = live.canary
    if running and running["version"] == version:
        pointer, started = live.pointer, False
    else:
        pointer, started = registry.commit(registry.plan_canary(version=version, percent=percent, by=by,
                                                                reason=reason, expect_live=champion)), True
        log.info("canary %s at %s%% of users; live model stays %s", version, percent, pointer["version"])
    return {"flipped": False, "canary": True, "started": started, "version": version,
            "percent": pointer["canary"]["percent"], "live": pointer["version"], "seq": pointer["seq"]}


# ---- human approval --------------------------------------------------------------------------------

def approval(evaluation: dict[str, Any], *, compare: tuple[str, ...], margin: float, mode: str,
             promotable: bool, inconclusive: bool = False) -> dict[str, Any]:
    """Must a human approve this flip? A gate-mode candidate that passed the gate waits when the gate could
    not tell it from the champion and leaves that to a human (`inconclusive`: GateDecision.asks_approval,
    promotion.inconclusive = approve), or when it is within `margin` of the champion on every compared
    debiased metric (a close call; margin 0 turns that off). The figures: debiased, paired (evaluation)."""
    champ = evaluation["champion"]
    cand_m = _debiased_values(evaluation["candidate"])
    champ_m = {} if champ is None else _debiased_values(champ)
    paired = (evaluation.get("paired") or {}).get("debiased", {}).get("overall") or {}
    deltas = {m: paired[m]["value"] for m in compare if (paired.get(m) or {}).get("value") is not None}
    intervals = {m: [paired[m]["low"], paired[m]["high"]] for m in deltas}
    within = bool(margin > 0 and champ is not None and deltas and all(abs(d) < margin for d in deltas.values()))
    shown = ", ".join(f"{m} {d:+.4f}" for m, d in deltas.items()) or "no comparable metric"
    asks = within or inconclusive
    if champ is None:
        why = "first model: there is no champion to compare with"
    elif not promotable:
        why = "the gate blocked the candidate"
    elif inconclusive:
        level = f"{(evaluation.get('paired') or {}).get('confidence', 0.95) * 100:g}% CI"
        shown_ci = ", ".join(f"{m} {d:+.4f} ({level} [{intervals[m][0]:+.4f}, {intervals[m][1]:+.4f}] over "
                             f"{paired.get('lists')} lists)" for m, d in deltas.items()) or "no comparable metric"
        why = (f"not told apart from champion {champ['version']} by the gate ({shown_ci}; "
               "promotion.inconclusive = approve)")
    elif margin <= 0:
        why = "approval is off (promotion.approval_margin = 0)"
    elif not within:
        why = f"clearly apart from champion {champ['version']} ({shown}; margin {margin:g})"
    else:
        why = f"within {margin:g} of champion {champ['version']} on every compared metric ({shown})"
    if asks and promotable and mode != "gate":
        why = f"{why}; promotion_mode={mode} asks no approval"
    return {"required": asks and promotable and mode == "gate", "within_margin": within,
            "inconclusive": inconclusive, "why": why, "margin": margin, "deltas": deltas, "intervals": intervals,
            "estimator": gate_mod.ESTIMATOR, "champion": None if champ is None else champ["version"],
            "candidate_metrics": {m: cand_m.get(m) for m in compare},
            "champion_metrics": {m: champ_m.get(m) for m in compare}}


def _debiased_values(block: dict[str, Any]) -> dict[str, float | None]:
    overall = (block.get("debiased") or {}).get("overall") or {}
    return {m: v.get("value") for m, v in overall.items() if isinstance(v, dict)}


def approval_request(*, gate: dict[str, Any], registered: dict[str, Any], run_url: str) -> tuple[str, str]:
    """Subject and Markdown body an approver sees: the comparison and where the report is."""
    a = gate["approval"]
    rows = "\n".join(f"| {m} | {_num(a['candidate_metrics'].get(m))} | {_num(a['champion_metrics'].get(m))} "
                      f"| {_num(a['deltas'].get(m), signed=True)} | {_ci(a['intervals'].get(m))} |"
                      for m in a["candidate_metrics"])
    subject = f"Promote {gate['version']} over {a['champion']}?"
    body = (f"The candidate passed the gate but is {a['why']}, so a human decides.\n\n"
            f"| metric ({a['estimator']}, position-debiased) | candidate {gate['version']} | champion {a['champion']} "
            f"| delta | interval of the delta |\n|---|---|---|---|---|\n{rows}\n\n"
            f"Gate: {gate['summary']}\n\n"
            f"Report: [Model report tab of this run]({run_url}) · `{registered['report_uri']}`\n\n"
            "**Approve** makes it live (the flip task runs); **Reject** keeps the champion live. "
            "No answer before the timeout counts as Reject.")
    return subject, body


def record_approval(*, ds: str, version: str, chosen: list[str], by: str | None, timed_out: bool,
                    settings: Settings | None = None) -> dict[str, Any]:
    """The human decision (or its absence), staged as approval.json next to the candidate; returned for the flip."""
    settings = settings or load_settings()
    decision = "timed out" if timed_out else ("approved" if chosen == ["Approve"] else "rejected")
    record = {"version": version, "logical_date": ds, "decision": decision, "chosen": chosen,
              "by": by or "nobody (timeout: the default is Reject)",
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}
    store = ObjectStore.from_settings(settings)
    key = _approval_key(ds, version)
    store.put_json(settings.s3.models_bucket, key, record)
    record["uri"] = store.uri(settings.s3.models_bucket, key)
    (log.info if decision == "approved" else log.warning)(
        "%s %s for %s: %s", version, decision, ds,
        "the flip runs" if decision == "approved" else "promotion skipped, the live model stays")
    return record


def _num(value: float | None, *, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def _ci(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"promotion mode must be one of {', '.join(MODES)}, got {mode!r}")


def rollback(*, to: str | None, reason: str, by: str, dry_run: bool = False,
             settings: Settings | None = None) -> dict[str, Any]:
    """Point live.json back at `to` (default: the previous version) through the same compare-and-swap."""
    settings = settings or load_settings()
    registry = Registry.from_settings(settings)
    plan = registry.plan_rollback(to=to, by=by, reason=reason)
    result = {"dry_run": dry_run, "from": plan.pointer["previous"], "to": plan.pointer["version"],
              "seq": plan.pointer["seq"], "diff": plan.diff()}
    if not dry_run:
        registry.commit(plan)
        from feedloop.ops import alerts  # imports Airflow's providers: only when a rollback really happened

        result["alerted"] = alerts.announce_rollback(settings, result, by=by, reason=reason)
    return result


def run_rollback(*, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The rollback_ranker task body: a refused rollback fails at once (a retry would be refused again)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        result = rollback(to=params.get("to_version") or None, reason=params.get("reason") or "",
                          dry_run=bool(params.get("dry_run")), by=f"rollback_ranker {run_id}")
    except PointerRaceLost:
        raise  # another flip won: a retry reads the new pointer
    except RegistryError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("%s %s -> %s", "dry run:" if result["dry_run"] else "rolled back", result["from"], result["to"])
    return result


def start_canary(*, version: str, percent: float, reason: str, by: str, dry_run: bool = False,
                 settings: Settings | None = None) -> dict[str, Any]:
    """Start a canary of `version` at `percent` of users, or ramp the running canary of `version`."""
    registry = Registry.from_settings(settings or load_settings())
    return _apply(registry, registry.plan_canary(version=version, percent=percent, by=by, reason=reason), dry_run)


def promote_canary(*, reason: str, by: str, dry_run: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """The running canary becomes the live version for every user."""
    registry = Registry.from_settings(settings or load_settings())
    return _apply(registry, registry.plan_promote_canary(by=by, reason=reason), dry_run)


def abort_canary(*, reason: str, by: str, dry_run: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """Stop the running canary: every user is served the live version again."""
    registry = Registry.from_settings(settings or load_settings())
    return _apply(registry, registry.plan_abort_canary(by=by, reason=reason), dry_run)


def run_canary(*, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The canary_ranker task body: promote or abort the running canary; a refusal fails at once."""
    from airflow.sdk.exceptions import AirflowFailException

    step = {"promote": promote_canary, "abort": abort_canary}[params["action"]]
    try:
        result = step(reason=params.get("reason") or "", dry_run=bool(params.get("dry_run")),
                      by=f"canary_ranker {run_id}")
    except PointerRaceLost:
        raise  # another pointer change won: a retry reads the new pointer
    except RegistryError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("%s%s: live %s, canary %s", "dry run: " if result["dry_run"] else "", result["action"], result["live"],
             result["canary"])
    return result


def _apply(registry: Registry, plan: FlipPlan, dry_run: bool) -> dict[str, Any]:
    """Commit a planned pointer change unless dry_run; what it did (or would do) and the pointer diff."""
    if not dry_run:
        registry.commit(plan)
    before = plan.current.pointer
    return {"dry_run": dry_run, "action": plan.pointer["action"], "seq": plan.pointer["seq"],
            "live": plan.pointer["version"], "canary": plan.pointer["canary"],
            "was": {"live": before["version"], "canary": before.get("canary")}, "diff": plan.diff()}


# ---- helpers -------------------------------------------------------------------------------------

def thresholds(*, settings: Settings, overrides: dict[str, Any] | None = None) -> gate_mod.Thresholds:
    """Config thresholds with a manual run's overrides, validated the same way (a misspelt key is an error)."""
    cfg = PromotionSettings.model_validate({**settings.promotion.model_dump(), **(overrides or {})})
    return gate_mod.Thresholds(floors=dict(cfg.floors), compare=tuple(cfg.compare), tolerance=cfg.tolerance,
                               segment_tolerance=cfg.segment_tolerance, min_support=cfg.min_support,
                               parity_max_abs_diff=cfg.parity_max_abs_diff, inconclusive=cfg.inconclusive)


def code_version() -> str:
    """The git commit of this checkout if there is one, else the installed package version."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from feedloop.core.config import repo_root

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


def _evaluate(cand: Candidate, *, champion: str | None, live: str | None) -> dict[str, Any]:
    """champion: the version live at the end of the candidate's day; live: the one live now (the flip's
    compare-and-swap expects it)."""
    import lightgbm as lgb

    from feedloop.training import evaluate

    cfg = cand.settings.promotion
    registry = Registry(cand.store, cand.settings.s3.models_bucket)
    champ_manifest = registry.manifest(champion) if champion else None
    champ_names = _feature_names(champ_manifest["feature_manifest"]) if champ_manifest else []
    columns = _holdout(cand.store, cand.settings.s3.lake_bucket, cand.dataset_key,
                       _feature_names(cand.feature_manifest), segments=cfg.segments, optional=champ_names)
    booster = lgb.Booster(model_str=cand.model_text)
    scores = booster.predict(_matrix(columns, cand.feature_manifest, what=f"candidate {cand.version}"))
    scored = {"candidate": scores, "popularity": columns["item_popularity"]}
    result: dict[str, Any] = {
        "version": cand.version,
        "logical_date": cand.ds,
        "holdout": {"uri": cand.store.uri(cand.settings.s3.lake_bucket, cand.dataset_key + "split=holdout/"),
                    "rows": int(len(scores)), "lists": int(len(np.unique(columns["request_id"])))},
        "candidate": evaluate.evaluate(columns=columns, score=scores, segments=cfg.segments),
        "champion": None,
        "live": live,
        "popularity": evaluate.evaluate(columns=columns, score=columns["item_popularity"], segments=cfg.segments),
        "feature_importance": dict(zip(booster.feature_name(),
                                       booster.feature_importance(importance_type="gain").astype(float).tolist())),
        "calibration": evaluate.calibration(score=scores, binary=columns["label_binary"]),
        "train": cand.train_metrics,
    }
    lacking = [n for n in champ_names if n not in columns]
    if champion is not None and lacking:  # a changed feature set: the gate holds it, promotion_mode=force can promote
        why = (f"champion {champion} needs feature column(s) this holdout lacks: {', '.join(lacking)} "
               "(its feature set differs from the candidate's)")
        log.warning("%s; it cannot be compared on the same rows", why)
        result["champion"] = {"version": champion, "unscorable": why, "overall": {}, "segments": {}}
    elif champion is not None:
        champ = lgb.Booster(model_str=registry.read(champion, "model.txt").decode())
        champ_matrix = _matrix(columns, champ_manifest["feature_manifest"], what=f"champion {champion}")
        champ_scores = champ.predict(champ_matrix)
        result["champion"] = {"version": champion,
                              **evaluate.evaluate(columns=columns, score=champ_scores, segments=cfg.segments)}
        scored["champion"] = champ_scores
    _add_counterfactual(result, columns=columns, scores=scored, settings=cfg)
    return result


def _add_counterfactual(result: dict[str, Any], *, columns: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                        settings: PromotionSettings) -> None:
    """Each scored block gains `explore` and `debiased` (feedloop.training.counterfactual); `paired` holds candidate -
    champion on the same lists; `estimates` says what each kind of figure is (the raw ones are biased)."""
    from feedloop.training import counterfactual

    boot = counterfactual.Bootstrap(resamples=settings.bootstrap_resamples, confidence=settings.confidence,
                                    seed=settings.bootstrap_seed)
    found = counterfactual.evaluate(columns=columns, scores=scores, segments=settings.segments, bootstrap=boot,
                                    paired=("candidate", "champion") if "champion" in scores else None)
    for name, blocks in found["scorers"].items():
        result[name].update(blocks)
    result["paired"] = None if found["paired"] is None else {**boot.to_dict(), **found["paired"]}
    result["estimates"] = {
        "overall, segments": "plain metrics on the logged lists, which the logging policy (the champion) ranked: "
                             "biased towards it; the floors use them, the comparison with the champion does not",
        **counterfactual.ESTIMATES,
        "paired": "candidate - champion per list, same lists and resamples (paired bootstrap)",
    }
    result["bootstrap"] = boot.to_dict()


def _holdout(store: ObjectStore, bucket: str, dataset_key: str, features: list[str],
             segments: tuple[str, ...] = (), optional: list[str] | None = None) -> dict[str, np.ndarray]:
    """The holdout's columns: the candidate's features and `segments` must be there; `optional` ones
    (the champion's features) are read where every file has them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = dataset_key + "split=holdout/"
    keys = sorted(k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet"))
    if not keys:
        raise EvaluationError(f"no holdout rows under {store.uri(bucket, prefix)}")
    required = list(dict.fromkeys([*HOLDOUT_COLUMNS, *segments, *features]))
    tables = []
    for key in keys:
        table = pq.read_table(io.BytesIO(store.get(bucket, key).body))
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise EvaluationError(f"{store.uri(bucket, key)} lacks column(s) {', '.join(missing)}")
        tables.append(table)
    everywhere = set.intersection(*(set(t.column_names) for t in tables))
    wanted = required + [c for c in dict.fromkeys(optional or []) if c in everywhere and c not in required]
    table = pa.concat_tables([t.select(wanted) for t in tables])
    return {name: table.column(name).to_numpy() for name in wanted}


def _feature_names(manifest: dict[str, Any]) -> list[str]:
    """The holdout columns holding each feature, in model order (a manifest may name them apart)."""
    return [f.get("column", f["name"]) for f in manifest["features"]]


def _matrix(columns: dict[str, np.ndarray], manifest: dict[str, Any], *, what: str) -> np.ndarray:
    names = _feature_names(manifest)
    missing = [n for n in names if n not in columns]
    if missing:
        raise EvaluationError(f"{what} needs feature column(s) the holdout lacks: {', '.join(missing)}")
    return np.column_stack([columns[n].astype(np.float32) for n in names]) if names else np.empty((0, 0), np.float32)


def _sample(cand: Candidate, matrix: np.ndarray) -> dict[str, Any]:
    """A few holdout rows and LightGBM's scores for them: a pod checks a model it loaded against these."""
    import lightgbm as lgb

    rows = matrix[:SAMPLE_ROWS]
    scores = lgb.Booster(model_str=cand.model_text).predict(rows)
    return {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in rows], "scores": scores.tolist()}


def _snapshot(cand: Candidate) -> dict[str, bytes]:
    bucket, prefix = cand.settings.s3.lake_bucket, cand.dataset_key + "snapshot/"
    keys = sorted(cand.store.list_keys(bucket, prefix))
    if not keys:
        raise EvaluationError(f"no feature snapshot under {cand.store.uri(bucket, prefix)}: serving pods need it")
    return {k[len(prefix):]: cand.store.get(bucket, k).body for k in keys}


def _version_of(block: dict[str, Any] | None) -> str | None:
    return block["version"] if block else None


def _gated(block: dict[str, Any], version: str) -> dict[str, Any]:
    return {"version": version, "overall": block["overall"], "segments": block["segments"],
            "debiased": block["debiased"]}


def _registered(registry: Registry, version: str, manifest: dict[str, Any]) -> dict[str, Any]:
    uri = registry.version_uri(version)
    return {"version": version, "uri": uri, "manifest_uri": uri + "manifest.json", "report_uri": uri + "report.html",
            "promotable": manifest["gate"]["promotable"]}


def _canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)

