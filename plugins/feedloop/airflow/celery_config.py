"""Celery settings of the production profile's workers: Airflow's defaults plus `production.worker_preload`.

Why: Celery imports the modules in `imports` in the worker's main process before it forks its pool,
and every task process is forked from a pool process (see feedloop.airflow.preload), so what is
listed there is imported once per worker instead of once per task. Airflow takes this dict as a
whole ([celery] celery_config_options), hence its defaults are kept and only `imports` is added.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from feedloop.core.config import Settings, load_settings

def celery_config(settings: Settings) -> dict[str, Any]:
    """Airflow's Celery config with the worker preload modules as Celery `imports`."""
    return {**DEFAULT_CELERY_CONFIG, "imports": tuple(settings.production.worker_preload)}


CELERY_CONFIG = celery_config(load_settings())
