"""
### Promote or abort the ranker canary

A canary (started by `retrain_ranker` with `canary_percent` > 0, or by `feedloop model canary
VERSION --percent N`) serves a share of users from a new version while the rest stay on the live
one. This DAG ends it: **promote** makes the canary the live version for everyone, **abort**
sends everyone back to the live version. Both are compare-and-swap writes of
`s3://<models>/ranker/live.json`, recorded with the reason and this run in the pointer history.
Same as `feedloop model promote-canary | abort-canary --reason ...`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from feedloop.airflow import notifier
from feedloop.airflow import promotion_tasks
from feedloop.core.config import load_settings
from feedloop.airflow.params import canary as canary_params
from feedloop.airflow.params import in_task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=notifier.default_args(retries=1),
    tags=["feedloop", "serving", "canary"],
    params=canary_params(),
)
def canary_ranker():
    @task
    def resolve_canary(*, params: dict, run_id: str) -> dict:
        return promotion_tasks.run_canary(params=in_task("canary_ranker", params, load_settings()), run_id=run_id)

    resolve_canary()


canary_ranker()
