"""The retrain DAG's retriever task body: when it does not run (no S3 needed for these)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from feedloop.airflow.retriever_tasks import retriever


@pytest.mark.parametrize(("env", "params", "why"), [
    pytest.param({"FEEDLOOP_RETRIEVAL__ENABLED": "false"}, {"promotion_mode": "gate"}, "retrieval.enabled is false",
                 id="switched-off-by-config"),
    pytest.param({}, {"promotion_mode": "dry-run"}, "dry-run", id="dry-run-registers-nothing"),
    pytest.param({"FEEDLOOP_RETRAIN__START_DATE": "2026-11-04"}, {"promotion_mode": "gate"}, "min_window_days",
                 id="too-few-days-of-data"),
])
def test_the_retriever_is_skipped_with_the_reason(monkeypatch, env, params, why):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AirflowSkipException, match=why):
        retriever(ds="2026-11-05", run_id="manual__1", params=params)
