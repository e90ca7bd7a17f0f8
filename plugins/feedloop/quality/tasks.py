"""Airflow task bodies for validation: DAG params in, a failed task out when data is bad.

Why AirflowFailException: bad data stays bad on a retry, so the task fails at once (no retry
storm, one alert) — and it does fail, unlike the GX Airflow provider 1.x, which let tasks
succeed on failed expectations.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from feedloop.config import load_settings
from feedloop.quality.runner import ValidationFailed, validate_day
from feedloop.quality.status import Acceptance


def validate(*, ds: str, run_id: str, params: dict[str, Any]) -> str:
    """Validate the logical date's hour partitions; returns the report URI (logged as well)."""
    from airflow.sdk.exceptions import AirflowFailException

    acceptance = Acceptance(hours=tuple(params.get("accept_hours") or ()), reason=params.get("accept_reason") or "",
                            by=f"DAG param accept_hours, run {run_id}")
    try:
        return validate_day(load_settings(), date.fromisoformat(ds), run_id=run_id, acceptance=acceptance).report_uri
    except ValidationFailed as exc:
        raise AirflowFailException(str(exc)) from exc
