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
from airflow.sdk import Param, dag, task

from feedloop import alerts, promotion


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=alerts.default_args(retries=1),
    tags=["feedloop", "serving", "canary"],
    params={
        "action": Param("promote", type="string", enum=["promote", "abort"],
                        description="promote: the canary becomes live; abort: everyone back on the live version."),
        "reason": Param("", type="string", minLength=3, maxLength=500,
                        description="Why (recorded in the pointer history)."),
        "dry_run": Param(False, type="boolean", description="Show the pointer change without making it."),
    },
)
def canary_ranker():
    @task
    def resolve_canary(*, params: dict, run_id: str) -> dict:
        return promotion.run_canary(params=params, run_id=run_id)

    resolve_canary()


canary_ranker()
