"""Airflow task body of the retrain DAG's retriever: one day of the two-tower retriever, beside the ranker.

Why beside the ranker and not after it: the retriever needs only validated data, and a retriever that fails
(or is held) must not stop the ranker's promotion, nor a held ranker the retriever's. Its failure fails only
this task (and so the run, which alerts through the DAG's notifier); the ranker's steps do not depend on it.
Why the quarantine markers and not the ranker's training set: the retriever reads the lake itself (positives
and impressions per item), so it leaves out the same quarantined hours by their markers (accepted hours have
none), over its training window and the held-out day.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from feedloop.airflow.training_tasks import run_settings
from feedloop.core.layout import CATALOG_ITEMS_KEY
from feedloop.core.storage import ObjectStore
from feedloop.features import dataset
from feedloop.promotion.retriever_daily import run_day
from feedloop.quality.window import quarantined_hours

log = logging.getLogger(__name__)


def retriever(*, ds: str, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate, gate, register and flip the retriever of day ds (idempotent: see run_day)."""
    settings = run_settings(params)
    if not settings.retrieval.enabled:
        raise AirflowSkipException("retrieval.enabled is false: no retriever is trained")
    if params.get("promotion_mode") == "dry-run":
        raise AirflowSkipException("promotion_mode=dry-run: the retriever registers and flips, so it does not run")
    day = date.fromisoformat(ds)
    try:
        dataset.window(settings, day + timedelta(days=1))  # the ranker's rule for "enough days of data yet"
    except dataset.NotEnoughData as exc:
        raise AirflowSkipException(str(exc)) from exc
    bucket = settings.s3.lake_bucket
    if CATALOG_ITEMS_KEY not in ObjectStore.from_settings(settings).list_keys(bucket, CATALOG_ITEMS_KEY):
        # A lake fed by producers that publish no catalog (a replayed dataset) still trains and serves the ranker;
        # failing this task every day would mark every run failed for a retriever that cannot exist yet.
        raise AirflowSkipException(f"no item catalog at s3://{bucket}/{CATALOG_ITEMS_KEY}: the retriever indexes "
                                   "the catalog's items; publish one there (item_id, tenant_id, topic, author_id, "
                                   "created_at, and title / description for content) to train it")
    start = day - timedelta(days=settings.dataset.window_days - 1)
    excluded = quarantined_hours(settings, start, day + timedelta(days=1))
    for part, why in excluded.items():
        log.warning("left out of the retriever's examples: %s: %s", part, why)
    run = run_day(settings, day=day, by=f"retrain_ranker {run_id}", excluded=excluded)
    log.info("retriever %s: %s%s", run.version, run.decision.reason,
             " (registered before: resumed)" if run.resumed else "")
    return {k: v for k, v in run.to_dict().items() if k != "recall"} | {"excluded_hours": excluded}
