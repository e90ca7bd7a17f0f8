"""A one-task DAG for the alert tests: the real flip step refuses a candidate the real gate blocked.

The retrain DAG reaches its flip only after a day of training; this DAG calls the same flip step the
same way (feedloop.airflow.promotion_tasks.blocked_fails) with the gate decision from its run conf, so a
gate block goes through Airflow's own failure callback exactly as in retrain_ranker.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from feedloop.airflow import notifier
from feedloop.airflow.promotion_tasks import blocked_fails
from feedloop.contract.decisions import GateResult
from feedloop.core.config import load_settings
from feedloop.promotion.flip import flip_pointer


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     default_args=notifier.default_args(retries=0), tags=["feedloop", "test"])
def alert_gate_check():
    @task
    def flip(*, ds: str, run_id: str, dag_run=None) -> dict:
        with blocked_fails():
            return flip_pointer(ds=ds, gate=GateResult.from_dict(dag_run.conf["gate"]),
                                promoted_by=f"alert_gate_check {run_id}", settings=load_settings()).to_dict()

    flip()


alert_gate_check()
