"""The retrain DAG's promotion steps before registration: evaluate -> export -> gate -> refit.

Each step takes the logical date and the settings, returns URIs and small results (evaluate and gate
their typed ones, feedloop.contract.decisions), and is idempotent per logical date: its output is staged next to the candidate (feedloop.promotion.candidate) and a
re-run returns what is there. Registration is feedloop.promotion.registration; the pointer moves in
feedloop.promotion.flip.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date
from typing import Any

import numpy as np

from feedloop.contract.decisions import Evaluation, EvaluationResult, GateDecision, GateResult
from feedloop.core.config import PromotionSettings, Settings
from feedloop.core.errors import EvaluationError
from feedloop.promotion import gate as gate_mod
from feedloop.promotion.approval import approval
from feedloop.promotion.candidate import (Candidate, check_mode, feature_matrix, feature_names, holdout,
                                          load_candidate)
from feedloop.promotion.registry import Registry, sha256
from feedloop.training import counterfactual, evaluate, export, train

log = logging.getLogger(__name__)

SAMPLE_ROWS = 8  # rows + scores saved in the manifest so a pod can check a model it loaded


def evaluate_candidate(*, ds: str, settings: Settings) -> EvaluationResult:
    """Candidate, champion (the version live at the end of ds) and popularity baseline on the same holdout rows.

    A staged evaluation is reused while the champion of ds and the live version are what they were
    (or the candidate itself went live since); after another pointer change it is evaluated again,
    and so is one staged before the counterfactual figures existed (no `paired` block).
    """
    cand = load_candidate(ds=ds, settings=settings)
    staged = cand.staged("evaluation.json")
    registry = Registry(cand.store, cand.settings.s3.models_bucket)
    live = registry.live()
    live_version = live.version if live else None
    champion = registry.champion_of(date.fromisoformat(ds))
    if staged is None or "paired" not in staged or (live_version != cand.version and (
            (_version_of(staged["champion"]), staged.get("live")) != (champion, live_version))):
        evaluation = _evaluate(cand, champion=champion, live=live_version)
        cand.stage("evaluation.json", evaluation.to_dict())
    else:
        evaluation = Evaluation.from_dict(staged)
    return EvaluationResult(version=cand.version, evaluation_uri=cand.stage_uri("evaluation.json"),
                            champion=evaluation.champion_version,
                            overall={k: evaluation.candidate["overall"][k] for k in ("auc", "ndcg@10")})


def _evaluate(cand: Candidate, *, champion: str | None, live: str | None) -> Evaluation:
    """champion: the version live at the end of the candidate's day; live: the one live now (the flip's
    compare-and-swap expects it)."""
    import lightgbm as lgb

    cfg = cand.settings.promotion
    registry = Registry(cand.store, cand.settings.s3.models_bucket)
    champ_manifest = registry.manifest(champion) if champion else None
    champ_names = feature_names(champ_manifest["feature_manifest"]) if champ_manifest else []
    columns = holdout(cand.store, cand.settings.s3.lake_bucket, cand.dataset_key,
                      feature_names(cand.feature_manifest), segments=cfg.segments, optional=champ_names)
    booster = lgb.Booster(model_str=cand.model_text)
    scores = booster.predict(feature_matrix(columns, cand.feature_manifest, what=f"candidate {cand.version}"))
    scored = {"candidate": scores, "popularity": columns["item_popularity"]}
    unscorable = None
    lacking = [n for n in champ_names if n not in columns]
    if champion is not None and lacking:  # a changed feature set: the gate holds it, promotion_mode=force can promote
        unscorable = (f"champion {champion} needs feature column(s) this holdout lacks: {', '.join(lacking)} "
                      "(its feature set differs from the candidate's)")
        log.warning("%s; it cannot be compared on the same rows", unscorable)
    elif champion is not None:
        champ = lgb.Booster(model_str=registry.read(champion, "model.txt").decode())
        champ_matrix = feature_matrix(columns, champ_manifest["feature_manifest"], what=f"champion {champion}")
        scored["champion"] = champ.predict(champ_matrix)
    half = None
    if cfg.unused_half and "champion" in scored:  # the champion's lucky lists stay out of its comparison
        half = counterfactual.unused_half(_paired_of(registry, champion))
    blocks, paired = judge(columns, scored, cfg, half=half)
    champion_block = None if champion is None else (
        {"version": champion, "unscorable": unscorable, "overall": {}, "segments": {}} if unscorable
        else {"version": champion, **blocks["champion"]})
    return Evaluation(
        version=cand.version, logical_date=cand.ds,
        holdout={"uri": cand.store.uri(cand.settings.s3.lake_bucket, cand.dataset_key + "split=holdout/"),
                 "rows": int(len(scores)), "lists": int(len(np.unique(columns["request_id"])))},
        candidate=blocks["candidate"], champion=champion_block, live=live, popularity=blocks["popularity"],
        feature_importance=dict(zip(booster.feature_name(),
                                    booster.feature_importance(importance_type="gain").astype(float).tolist())),
        calibration=evaluate.calibration(score=scores, binary=columns["label_binary"]),
        train=cand.train_metrics,
        paired=paired,
        estimates={
            "overall, segments": "plain metrics on the logged lists, which the logging policy (the champion) "
                                 "ranked: biased towards it; the floors use them, the comparison with the champion "
                                 "does not",
            **counterfactual.ESTIMATES,
            "paired": "candidate - champion per list, same lists and resamples (paired bootstrap)",
        },
        bootstrap=_bootstrap(cfg).to_dict())


def judge(columns: dict[str, np.ndarray], scored: dict[str, np.ndarray], cfg: PromotionSettings, *,
          half: int | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Every scorer's block on the holdout `columns` (plain metrics on the logged lists, then the counterfactual
    estimates) and, with a "champion" among `scored`, the paired candidate - champion differences the gate
    decides on. half: compare on that half of the exploration lists only (promotion.unused_half); and with
    promotion.compare_days, on those of the holdout's last days only.
    Shared by the evaluation and bench/loop.py's challengers, so both judge exactly as the gate does."""
    plain = {name: evaluate.evaluate(columns=columns, score=score, segments=cfg.segments)
             for name, score in scored.items()}
    explore = np.asarray(columns["explore"]).astype(bool)
    if half is not None:
        explore &= counterfactual.list_half(columns["request_id"]) == half
    undated = bool(cfg.compare_days) and "day" not in columns   # a training set built before it had the column
    days = 0 if undated else cfg.compare_days
    if days:
        explore &= recent_days(columns, days)
    columns = {**columns, "explore": explore}
    gated, judged_on = counterfactual.choose_estimate(columns, compare_on=cfg.compare_on, min_support=cfg.min_support,
                                                      half=half, days=days)
    if undated:
        log.warning("promotion.compare_days %d: the holdout has no day column, so the whole window's lists are "
                    "compared; rebuild that day's training set to compare on its last days", cfg.compare_days)
        judged_on += " (the whole window: the holdout has no day column)"
    (log.info if gated == "explore" or cfg.compare_on == "all" else log.warning)("compared on %s", judged_on)
    boot = _bootstrap(cfg)
    found = counterfactual.evaluate(columns=columns, scores=scored, segments=cfg.segments, bootstrap=boot,
                                    paired=("candidate", "champion") if "champion" in scored else None)
    blocks = {name: {**metrics.to_dict(), **found.scorers[name]} for name, metrics in plain.items()}
    paired = None if found.paired is None else {**boot.to_dict(), "gated": gated, "judged_on": judged_on,
                                                "half": half if gated == "explore" else None, **found.paired}
    return blocks, paired


def recent_days(columns: dict[str, np.ndarray], days: int) -> np.ndarray:
    """Rows of the holdout's last `days` days. Why: the window's older exploration lists come from days both
    models trained on, and show less of their difference than the newest (bench/estimates.py, seed 11's 71 pairs:
    NDCG@10 on lists 11-13 days old showed 10-21 % of the true difference, on lists 1-4 days old 45-48 %)."""
    day = np.asarray(columns["day"]).astype("datetime64[D]")
    return day > day.max() - np.timedelta64(days, "D")


def _bootstrap(cfg: PromotionSettings) -> counterfactual.Bootstrap:
    return counterfactual.Bootstrap(resamples=cfg.bootstrap_resamples, confidence=cfg.confidence,
                                    seed=cfg.bootstrap_seed)


def _paired_of(registry: Registry, version: str) -> dict[str, Any] | None:
    """The paired comparison that gated `version` (its metrics.json), None for a version registered without one."""
    metrics = registry.store.get_json(registry.bucket, registry.version_key(version, "metrics.json"))
    return metrics.get("paired") if isinstance(metrics, dict) else None


def export_candidate(*, ds: str, settings: Settings) -> dict[str, Any]:
    """ONNX export and its parity against LightGBM on a holdout sample (the figure is recorded, not raised)."""
    cand = load_candidate(ds=ds, settings=settings)
    parity = cand.staged("parity.json") or _export(cand)
    log.info("ONNX parity of %s: max |diff| %s, scaled %s, on %s rows (threshold %s)", cand.version,
             parity["max_abs_diff"], parity.get("max_scaled_diff"), parity["rows"], parity["threshold"])
    return {"version": cand.version, "onnx_uri": cand.stage_uri("model.onnx"),
            **{k: v for k, v in parity.items() if k != "sample"}}


def _export(cand: Candidate) -> dict[str, Any]:
    """model.onnx and parity.json staged for the candidate; the parity figure with its sample rows."""
    cfg = cand.settings.promotion
    columns = holdout(cand.store, cand.settings.s3.lake_bucket, cand.dataset_key, feature_names(cand.feature_manifest))
    matrix = feature_matrix(columns, cand.feature_manifest, what=f"candidate {cand.version}")
    rows = np.linspace(0, len(matrix) - 1, min(len(matrix), cfg.parity_sample_rows)).astype(int)
    sample = matrix[np.unique(rows)]  # spread over the whole day, not its first lists
    onnx_bytes = export.to_onnx(model_text=cand.model_text, n_features=matrix.shape[1])
    result = export.check_parity(model_text=cand.model_text, onnx_bytes=onnx_bytes, matrix=sample,
                                 threshold=cfg.parity_max_abs_diff, worst=SAMPLE_ROWS)
    cand.store.put(cand.settings.s3.models_bucket, cand.stage_key("model.onnx"), onnx_bytes)
    parity = {**result.to_dict(), "onnx_sha256": sha256(onnx_bytes),
              "sample": _sample(cand, sample[list(result.worst)] if result.worst else sample[:SAMPLE_ROWS])}
    cand.stage("parity.json", parity)
    return parity


def _sample(cand: Candidate, rows: np.ndarray) -> dict[str, Any]:
    """Holdout rows and LightGBM's scores for them: a pod checks a model it loaded against these. They are
    the parity check's worst rows, so a model that passed here passes there (before 2026-12-07 they were
    the holdout's first rows, which the check had not covered: every pod refused a registered model)."""
    import lightgbm as lgb

    scores = lgb.Booster(model_str=cand.model_text).predict(rows)
    return {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in rows], "scores": scores.tolist()}


def gate_candidate(*, ds: str, overrides: dict[str, Any] | None = None, mode: str = "gate",
                   settings: Settings) -> GateResult:
    """The gate decision with every number behind it, saved as gate.json; overrides = manual-run params.

    Also says whether a human must approve the flip (promotion.approval_margin, promotion.inconclusive;
    see approval.approval). `comparison` is the headline candidate-vs-champion figure as data (Comparison).
    """
    check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    staged, parity = cand.staged("evaluation.json"), cand.staged("parity.json")
    if staged is None:
        raise EvaluationError(f"{cand.version} has no evaluation yet: run evaluate_candidate for {ds} first")
    if "paired" not in staged:
        raise EvaluationError(f"{cand.stage_uri('evaluation.json')} predates the counterfactual evaluation: "
                              f"run evaluate_candidate for {ds} again (it evaluates afresh)")
    evaluation = Evaluation.from_dict(staged)
    limits = thresholds(settings=cand.settings, overrides=overrides)
    decision = gate_mod.decide({**gated(evaluation.candidate, cand.version), "parity": parity},
                               evaluation.champion, limits, paired=evaluation.paired)
    uri = cand.stage("gate.json", decision.to_dict())
    (log.info if decision.promotable else log.warning)("gate: %s", decision.summary())
    return GateResult(version=cand.version, promotable=decision.promotable, champion=decision.champion,
                      summary=decision.summary(), gate_uri=uri, mode=mode, comparison=decision.comparison,
                      approval=approval(evaluation, compare=limits.compare,
                                        margin=cand.settings.promotion.approval_margin, mode=mode,
                                        promotable=decision.promotable, inconclusive=decision.asks_approval))


def thresholds(*, settings: Settings, overrides: dict[str, Any] | None = None) -> gate_mod.Thresholds:
    """Config thresholds with a manual run's overrides, validated the same way (a misspelt key is an error)."""
    cfg = PromotionSettings.model_validate({**settings.promotion.model_dump(), **(overrides or {})})
    return gate_mod.Thresholds(floors=dict(cfg.floors), compare=tuple(cfg.compare), tolerance=cfg.tolerance,
                               tolerance_widths=cfg.tolerance_widths,
                               segment_tolerance=cfg.segment_tolerance, min_support=cfg.min_support,
                               min_gain=cfg.min_gain,
                               parity_max_abs_diff=cfg.parity_max_abs_diff, inconclusive=cfg.inconclusive)


def gated(block: dict[str, Any], version: str) -> dict[str, Any]:
    """What gate.decide reads of a candidate's evaluation block (parity is added by the caller)."""
    return {"version": version, "overall": block["overall"], "segments": block["segments"],
            "debiased": block["debiased"], "explore": block["explore"]}


def refit_candidate(*, ds: str, mode: str = "gate", settings: Settings) -> dict[str, Any]:
    """After the gate: the evaluated candidate's recipe refit on the whole window, exported and parity-checked.

    The refit is staged as a candidate of its own (candidates/<refit version>/) and named in the evaluated
    twin's refit.json; register then makes it the version that serves, linked to its twin, whose metrics
    the gate judged. Nothing to refit when train.refit is off or the gate held the candidate (outside
    promotion_mode=force). Idempotent: the same inputs give the same model bytes and version.
    """
    check_mode(mode)
    cand = load_candidate(ds=ds, settings=settings)
    gate_record = cand.staged("gate.json")
    if gate_record is None:
        raise EvaluationError(f"{cand.version} has no gate decision yet: run gate_candidate for {ds} first")
    if not cand.settings.train.refit:
        return {"version": cand.version, "refit": None, "why": "train.refit is off: the evaluated model serves"}
    if not GateDecision.from_dict(gate_record).promotable and mode != "force":
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
                  **{k: parity[k] for k in ("passed", "max_abs_diff", "max_scaled_diff", "threshold")},
                  "parity_rows": parity["rows"]}
        cand.stage("refit.json", record)
    (log.info if record["passed"] else log.warning)(
        "refit of %s: %s (%s rounds on %s rows), ONNX parity %s", cand.version, record["version"], record["rounds"],
        record["rows"], "passed" if record["passed"] else f"FAILED ({record['max_abs_diff']}): the evaluated model serves")
    return {"version": cand.version, "refit": record["version"], **{k: record[k] for k in ("rounds", "rows", "passed")}}


def _version_of(block: dict[str, Any] | None) -> str | None:
    return block["version"] if block else None
