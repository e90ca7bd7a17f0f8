"""Airflow task bodies for validation: DAG params in; quarantine, warnings and alerts out.

Why the task does not always fail on bad data: with `dataset.on_quarantined: exclude` (default) a
quarantined hour is left out of training, so the run goes on and the task itself opens the day's
data incidents (quarantined hours, warned hours: one each per DAG + day). With `refuse`, or when
the day has no data at all, it fails with AirflowFailException: bad data stays bad on a retry, so
no retry storm, one alert (unlike the GX Airflow provider 1.x, which let tasks succeed on failed
expectations).
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any

from feedloop.alerts import send
from feedloop.core.config import load_settings
from feedloop.quality.runner import ValidationFailed, validate_day
from feedloop.quality.status import Acceptance

log = logging.getLogger(__name__)


def validate(*, ds: str, run_id: str, params: dict[str, Any]) -> str:
    """Validate the logical date's hour partitions; returns the report URI (logged as well)."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    log.info("validate task body started %.1f s after its process (imports, DAG parse)", _process_age_s())
    settings = load_settings()
    acceptance = Acceptance(hours=tuple(params.get("accept_hours") or ()), reason=params.get("accept_reason") or "",
                            by=f"DAG param accept_hours, run {run_id}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        result = validate_day(settings, date.fromisoformat(ds), run_id=run_id, acceptance=acceptance)
    except ValidationFailed as exc:
        if settings.dataset.on_quarantined == "refuse" or exc.result.summary["day_failures"]:
            raise AirflowFailException(str(exc)) from exc
        log.warning("%s\nThese hours are left out of training (dataset.on_quarantined: exclude).", exc)
        result = exc.result
    log.info("validate_day took %.1f s (%.1f s CPU in this process, all its threads)",
             time.perf_counter() - t0, time.process_time() - cpu0)
    if result.warned_hours:
        log.warning("validation warnings (the hours train) in hours %s; report %s", result.warned_hours,
                    result.report_uri)
    t0 = time.perf_counter()
    send.validation_incidents(settings, get_current_context(), result)
    log.info("alerts took %.1f s", time.perf_counter() - t0)
    return result.report_uri


def _process_age_s() -> float:
    """Seconds since this process started (a Celery task process: since the fork that made it)."""
    import psutil

    return time.time() - psutil.Process().create_time()
