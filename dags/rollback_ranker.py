"""
### Roll back the live ranker

Points `s3://<models>/ranker/live.json` back at an earlier registered version (default: the
previous live one) through the same compare-and-swap as a promotion, so it can never tear the
pointer or silently undo a flip that happened meanwhile. The reason and this run are recorded in
the pointer and its history (`feedloop model history`). Serving pods follow within one poll.
Same as `feedloop model rollback [--to VERSION] --reason ...`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from feedloop.airflow import notifier
from feedloop.airflow import promotion_tasks
from feedloop.core.config import load_settings
from feedloop.airflow.params import rollback as rollback_params
from feedloop.airflow.params import in_task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=notifier.default_args(retries=1),
    tags=["feedloop", "serving", "rollback"],
    params=rollback_params(),
)
def rollback_ranker():
    @task
    def rollback(*, params: dict, run_id: str) -> dict:
        return promotion_tasks.run_rollback(params=in_task("rollback_ranker", params, load_settings()), run_id=run_id)

    rollback()


rollback_ranker()
