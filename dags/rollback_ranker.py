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
from airflow.sdk import Param, dag, task

from feedloop import alerts, promotion


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=alerts.default_args(retries=1),
    tags=["feedloop", "serving", "rollback"],
    params={
        "to_version": Param(None, type=["null", "string"], pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]+$",
                            description="Registered version to make live (empty: the previous live version)."),
        "reason": Param("", type="string", minLength=3, maxLength=500,
                        description="Why (recorded in the pointer history)."),
        "dry_run": Param(False, type="boolean", description="Show the pointer change without making it."),
    },
)
def rollback_ranker():
    @task
    def rollback(*, params: dict, run_id: str) -> dict:
        return promotion.run_rollback(params=params, run_id=run_id)

    rollback()


rollback_ranker()
