"""The production profile's Celery workers import feedloop's task modules once, before forking their tasks."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

from feedloop.core.config import load_settings
from feedloop.ops.stack import production, services

ROOT = Path(__file__).resolve().parents[3]


def _settings(tmp_path, **env: str):
    return load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path), "FEEDLOOP_STACK__PROFILE": "production", **env})


def _celery_options(settings) -> dict[str, str | None]:
    return {s.name: s.env().get("AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS") for s in services(settings)
            if isinstance(s, production.AirflowComponent)}


def test_only_the_workers_get_the_preloading_celery_config_and_an_empty_list_turns_it_off(tmp_path):
    options = _celery_options(_settings(tmp_path))
    assert {k: v for k, v in options.items() if v} == {"airflow-worker-1": production.CELERY_CONFIG,
                                                        "airflow-worker-2": production.CELERY_CONFIG}
    off = _settings(tmp_path, FEEDLOOP_PRODUCTION__WORKER_PRELOAD="[]")
    assert off.production.worker_preload == ()
    assert not any(_celery_options(off).values())


def test_the_celery_config_is_airflows_defaults_with_the_preload_as_celery_imports(tmp_path):
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    module, _, name = production.CELERY_CONFIG.rpartition(".")
    config = getattr(importlib.import_module(module), name)  # what Airflow's conf.getimport resolves
    assert {k: v for k, v in config.items() if k != "imports"} == DEFAULT_CELERY_CONFIG
    settings = _settings(tmp_path, FEEDLOOP_PRODUCTION__WORKER_PRELOAD='["json", "feedloop.airflow.preload"]')
    assert importlib.import_module(module).celery_config(settings)["imports"] == ("json", "feedloop.airflow.preload")


def test_the_default_preload_exists_and_covers_every_task_module_a_dag_imports():
    preload = load_settings().production.worker_preload
    assert preload and all(importlib.util.find_spec(m) for m in preload)
    dags = {f"feedloop.airflow.{alias.name}" if node.module == "feedloop.airflow" else node.module
            for path in (ROOT / "dags").glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("feedloop.airflow")
            for alias in node.names}
    source = ast.parse((ROOT / "plugins" / "feedloop" / "airflow" / "preload.py").read_text())
    preloaded = {f"{node.module}.{alias.name}" for node in ast.walk(source)
                 if isinstance(node, ast.ImportFrom) and node.module == "feedloop.airflow" for alias in node.names}
    assert dags and dags <= preloaded, f"not preloaded: {sorted(dags - preloaded)}"
