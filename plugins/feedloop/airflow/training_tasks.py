"""Airflow task bodies of the retrain DAG up to training: logical date and params in, URIs and small dicts out.

The run for logical date D (its data interval is the day D) trains on the impressions of
[D + 1 - window_days, D + 1): D itself is the held-out day, D - 1 the validation day. Params are
checked once by the first task (feedloop.airflow.params) and turned into library arguments here.
The promotion steps' task bodies (evaluate .. flip) are feedloop.airflow.promotion_tasks.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from feedloop.airflow import params as params_mod
from feedloop.content import item_embeddings
from feedloop.content.embedder import load_embedder
from feedloop.core.config import Settings, load_settings
from feedloop.core.storage import ObjectStore
from feedloop.features import dataset
from feedloop.features import snapshots as feature_snapshots
from feedloop.quality import WindowNotReady, training_window
from feedloop.quality.window import quarantined_hours
from feedloop.training import train as train_mod

log = logging.getLogger(__name__)


def run_settings(params: dict[str, Any]) -> Settings:
    """The settings with the run's window_days and objective params applied."""
    settings = load_settings()
    updates: dict[str, Any] = {}
    if params.get("window_days"):
        updates["dataset"] = settings.dataset.model_copy(update={"window_days": int(params["window_days"])})
    if params.get("objective"):
        updates["train"] = settings.train.model_copy(update={"objective": params["objective"]})
    return settings.model_copy(update=updates) if updates else settings


def embed_catalog(*, params: dict[str, Any]) -> dict[str, Any]:
    """The catalog's new and changed items embedded before the training set is built. Idempotent (a re-run
    embeds nothing and writes nothing); with no catalog it logs why and succeeds: the retrain needs none."""
    settings = run_settings(params)
    result = item_embeddings.embed_catalog(ObjectStore.from_settings(settings), settings.s3.lake_bucket,
                                           load_embedder(settings.content))
    return asdict(result)


def build_dataset(*, ds: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The window's trainable hours by dataset.on_quarantined (late hours validated again), then the
    point-in-time training set without the hours left out; skip if too little data."""
    settings = run_settings(params)
    end = date.fromisoformat(ds) + timedelta(days=1)
    try:
        start, end = dataset.window(settings, end)
    except dataset.NotEnoughData as exc:
        raise AirflowSkipException(str(exc)) from exc
    as_dt = [datetime(d.year, d.month, d.day, tzinfo=timezone.utc) for d in (start, end)]
    try:
        checked = training_window(settings, *as_dt, run_id=run_id)
    except WindowNotReady as exc:
        raise AirflowFailException(f"training refused: {exc}") from exc
    excluded = checked.excluded | quarantined_hours(settings, dataset.input_start(settings, start), start)
    for part, why in excluded.items():
        log.warning("left out of the training set: %s: %s", part, why)
    result = dataset.build(settings, end=end, excluded=excluded)
    return {**{k: v for k, v in asdict(result).items() if k != "files"}, "revalidated": checked.revalidated,
            "clean_share": round(checked.clean_share, 4)}


def publish_features(*, ds: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Publish the run's feature snapshot for the pods whatever its candidate's fate; nothing in dry-run."""
    return asdict(feature_snapshots.publish(run_settings(params), day=date.fromisoformat(ds),
                                            by=f"retrain_ranker {run_id}",
                                            dry_run=params["promotion_mode"] == "dry-run"))


def train(*, ds: str, params: dict[str, Any]) -> dict[str, Any]:
    return asdict(train_mod.train(run_settings(params), day=date.fromisoformat(ds)))


def check_params(*, params: dict[str, Any]) -> dict[str, Any]:
    """The run's params, checked (cross-field rules included); a bad one fails the run before any work."""
    return params_mod.in_task("retrain_ranker", params, load_settings())
