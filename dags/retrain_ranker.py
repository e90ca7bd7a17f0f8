"""
### Retrain the ranker (daily)

For logical date D (the day that just ended), in order:

1. **validate** — Great Expectations checks every hour partition of D; a failing hour is quarantined,
   the task fails with every failed expectation and the report link, Slack and email are alerted.
   To train on a failing hour anyway, trigger with `accept_hours` and a non-empty `accept_reason`.
2. **build_dataset** — refuses a window with quarantined or unvalidated hours, then builds the
   point-in-time training set of `[D + 1 - window_days, D + 1)` (`s3://<lake>/datasets/ranker/D/`).
   Skipped (with the reason) while fewer than `dataset.min_window_days` days of data exist.
3. **train** — LightGBM (LambdaRank or binary), early-stopped on D - 1; D is held out.
4. **evaluate → export → gate → register → flip** — metrics vs the live champion on D, ONNX export
   with a parity check, the gate (floors + no regression per segment), an immutable version in
   `s3://<models>/ranker/versions/`, and an atomic compare-and-swap of `ranker/live.json`.
   With `canary_percent` > 0 the flip starts a canary of the version at that share of users
   instead; promote or abort it with the `canary_ranker` DAG or `feedloop model promote-canary |
   abort-canary`. While a canary runs, a later run's flip is refused (alerted) until it is resolved.

Backfills (`catchup=True`, or Backfill in the UI) apply the given params to every run.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from feedloop import alerts
from feedloop.config import load_settings
from feedloop.quality import tasks as quality_tasks
from feedloop.training_tasks import build_dataset as build_dataset_step
from feedloop.training_tasks import promotion_step
from feedloop.training_tasks import train as train_step

SETTINGS = load_settings()


@dag(
    # Data intervals, so the run for 2026-11-05 starts after that day ends and its logical date
    # (ds) IS the day it validates; Airflow 3's default cron timetable would make ds the next day.
    # retrain.schedule null: no schedule, only triggered runs (the closed-loop demo triggers one per day).
    schedule=CronDataIntervalTimetable(SETTINGS.retrain.schedule, timezone="UTC") if SETTINGS.retrain.schedule
    else None,
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
        "window_days": Param(SETTINGS.dataset.window_days, type="integer", minimum=3, maximum=90,
                             description="Days of impressions in the training window (the last is held out)."),
        "objective": Param(SETTINGS.train.objective, type="string", enum=["lambdarank", "binary"],
                           description="LightGBM objective."),
        "gate_thresholds": Param({}, type="object",
                                 description="Overrides of promotion.thresholds for this run, e.g. {\"min_auc\": 0.6}."),
        "canary_percent": Param(SETTINGS.promotion.canary_percent, type="number", minimum=0, maximum=100,
                                description="0: the flip makes the gated model live. N > 0: it starts a canary "
                                            "at N% of users instead (the first model always goes live)."),
    },
)
def retrain_ranker():
    @task
    def validate(*, ds: str, run_id: str, params: dict) -> str:
        return quality_tasks.validate(ds=ds, run_id=run_id, params=params)

    @task
    def build_dataset(*, ds: str, params: dict) -> dict:
        return build_dataset_step(ds=ds, params=params)

    @task
    def train(*, ds: str, params: dict) -> dict:
        return train_step(ds=ds, params=params)

    @task
    def evaluate(*, ds: str) -> dict:
        return promotion_step("evaluate_candidate", ds=ds)

    @task
    def export(*, ds: str) -> dict:
        return promotion_step("export_candidate", ds=ds)

    @task
    def gate(*, ds: str, params: dict) -> dict:
        return promotion_step("gate_candidate", ds=ds, overrides=params.get("gate_thresholds") or None)

    @task
    def register(*, ds: str) -> dict:
        return promotion_step("register_candidate", ds=ds)

    @task
    def flip(decision: dict, *, ds: str, run_id: str, params: dict) -> dict:
        return promotion_step("flip_pointer", ds=ds, gate=decision, promoted_by=f"retrain_ranker {run_id}",
                              canary_percent=params.get("canary_percent"))

    decision = gate()
    validate() >> build_dataset() >> train() >> evaluate() >> export() >> decision >> register() >> flip(decision)


retrain_ranker()
