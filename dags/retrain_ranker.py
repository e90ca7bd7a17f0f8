"""
### Retrain the ranker (daily)

1. **validate** — Great Expectations checks every hour partition of the logical date
   (`events/engagement/dt=<ds>/hour=HH/`). Results JSON, Data Docs HTML and an index page go to
   `s3://<lake>/validation/dt=<ds>/`. A failing hour is quarantined and the task fails with every
   failed expectation (observed vs expected) and the report link; the alert goes to Slack and email.
   Re-running after a replay fixed the data clears the quarantine.
   To train on a failing hour anyway, trigger with `accept_hours` and a non-empty `accept_reason`
   (recorded in the hour's status; valid while its objects are unchanged).

Training lands after `validate` and starts with `feedloop.quality.require_validated_window(...)`,
which refuses quarantined, failed or unvalidated hours.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from feedloop import alerts
from feedloop.config import load_settings
from feedloop.quality import tasks as quality_tasks

SETTINGS = load_settings()


@dag(
    # Data intervals, so the run for 2026-11-05 starts after that day ends and its logical date
    # (ds) IS the day it validates; Airflow 3's default cron timetable would make ds the next day.
    schedule=CronDataIntervalTimetable(SETTINGS.retrain.schedule, timezone="UTC"),
    start_date=pendulum.datetime(*SETTINGS.retrain.start_date.timetuple()[:3], tz="UTC"),
    catchup=True,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=alerts.default_args(),
    tags=["feedloop", "training"],
    params={
        "accept_hours": Param([], type="array", items={"type": "integer", "minimum": 0, "maximum": 23},
                              description="Hours (0-23) of the logical date to train on despite failed checks."),
        "accept_reason": Param("", type="string", maxLength=500,
                               description="Why those hours are accepted (required with accept_hours; recorded)."),
    },
)
def retrain_ranker():
    @task
    def validate(*, ds: str, run_id: str, params: dict) -> str:
        return quality_tasks.validate(ds=ds, run_id=run_id, params=params)

    validate()


retrain_ranker()
