"""
### Retrain the ranker (daily)

For logical date D (the day that just ended), in order:

0. **check_params** — every param against its type and bounds, no unknown names, and the rules
   across params (`promotion_mode=force` needs `force_reason`, `accept_hours` needs
   `accept_reason`, ...); a bad run fails here, naming the param, before any work.
1. **validate** — Great Expectations checks every hour partition of D. A blocking failure (schema,
   types, ids, enums, bounds, duplicates, orphan outcomes, event time, a zero click rate) quarantines
   its hour: Slack and email get one incident naming every failed expectation and the report link.
   Warnings (volume, click-rate drift, unknown tenants, freshness) are recorded and alerted once per
   day; the hour trains. With `dataset.on_quarantined: refuse` the task fails on a quarantined hour.
   To train on a quarantined hour, trigger with `accept_hours` and a non-empty `accept_reason`.

   **embed_catalog** (beside validate) — embeds the catalog items that are new or whose title or
   description changed (WordLlama, settings `content:`) into `s3://<lake>/catalog/items/embeddings.parquet`;
   writes nothing when nothing changed, and without a catalog it logs why and succeeds.
2. **build_dataset** — validates again the window's hours whose objects changed since validation
   (late events, replays), leaves quarantined hours out (named in the lineage, the report and the
   log; refused when fewer than `dataset.min_clean_share` of the hours are clean, or on any with
   `on_quarantined: refuse`), then builds the point-in-time training set of
   `[D + 1 - window_days, D + 1)` (`s3://<lake>/datasets/ranker/D/`).
   Skipped (with the reason) while fewer than `dataset.min_window_days` days of data exist.
3. **publish_features** (beside train) — the dataset's feature snapshot (as of D + 1) becomes an
   immutable folder `s3://<models>/features/snapshots/<as_of>-<hash>/` and `features/live.json`
   moves to it (compare-and-swap, never back to an older day), whatever the gate later decides:
   pods serve the live model with the newest snapshot of its feature definitions. Not in dry-run.
4. **train** — LightGBM (LambdaRank or binary), early-stopped on D - 1; D is held out.
5. **evaluate → export → gate → refit → register → flip** — metrics vs the champion of D (the version
   live at the end of D) on D, raw and position-debiased with bootstrap intervals, ONNX export with a
   parity check, the gate (floors, then candidate − champion on the debiased NDCG@10: promoted unless
   its interval says it is worse by more than `promotion.tolerance`; `promotion.inconclusive` decides
   a straddling interval; clearly worse segments hold it), then (`train.refit`, candidates the gate passed) the same recipe refit on the whole window
   with the evaluated rounds and its own parity check, immutable versions in
   `s3://<models>/ranker/versions/` (the refit linked to its evaluated twin), and an atomic
   compare-and-swap of `ranker/live.json` to the refit. A backfill never moves it back to an older
   day's model (unless `promotion_mode=force`).
   With `canary_percent` > 0 the flip starts a canary of the version at that share of users
   instead; promote or abort it with the `canary_ranker` DAG or `feedloop model promote-canary |
   abort-canary`. While a canary runs, a later run's flip is refused (alerted) until it is resolved.
6. **approve** (optional, `promotion.approval_margin` > 0) — a candidate that passed the gate but is
   within that margin of the champion on every compared metric waits for Approve / Reject in the
   Airflow UI; Reject or no answer within `promotion.approval_timeout_minutes` skips the flip and
   records why (`ranker/runs/D/candidates/<version>/approval.json`). Skipped, with the reason, otherwise.

7. **retriever** (beside build_dataset .. flip, after validate) — the two-tower retriever of D: trained on
   `[D + 1 - window_days, D)` without the quarantined hours, evaluated on D beside popularity and the
   retriever live at the end of D (exposure-weighted recall with paired bootstrap intervals), ONNX parity,
   registered in `s3://<models>/retriever/versions/`, `retriever/live.json` flipped if its gate passed.
   A re-run or retry for D reuses the version registered for D (no second registration, no second flip).
   Its failure fails only this task (alerted); the ranker's promotion goes on. Skipped with
   `retrieval.enabled: false`, in dry-run, and while there are too few days of data.

`promotion_mode`: **gate** (the gate decides), **force** (live despite the gate, with
`force_reason`, recorded in the pointer; never past a failed ONNX parity) or **dry-run** (every
step runs, nothing is registered and `live.json` is untouched; the report is staged).

Backfills (catchup, Backfill in the UI, `POST /api/v2/backfills` with `dag_run_conf`) apply the
given params to every run; to re-run days that already ran, choose reprocess "all runs" (and, in the
UI, tick "override parameters on existing runs"): each run's conf is replaced by the backfill's.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from feedloop.airflow import notifier
from feedloop.airflow import promotion_tasks, retriever_tasks, training_tasks
from feedloop.airflow.approval import PromotionApproval
from feedloop.core.config import load_settings
from feedloop.airflow.params import retrain as retrain_params
from feedloop.airflow import quality_tasks

SETTINGS = load_settings()


@dag(
    # Data intervals, so the run for 2026-11-05 starts after that day ends and its logical date
    # (ds) IS the day it validates; Airflow 3's default cron timetable would make ds the next day.
    # retrain.schedule null: no schedule, only triggered runs (the closed-loop demo triggers one per day).
    schedule=CronDataIntervalTimetable(SETTINGS.retrain.schedule, timezone="UTC") if SETTINGS.retrain.schedule
    else None,
    start_date=pendulum.datetime(*SETTINGS.retrain.start_date.timetuple()[:3], tz="UTC"),
    catchup=SETTINGS.retrain.catchup,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=notifier.default_args(),
    tags=["feedloop", "training"],
    params=retrain_params(SETTINGS),
)
def retrain_ranker():
    @task
    def check_params(*, params: dict) -> dict:
        return training_tasks.check_params(params=params)

    @task
    def validate(*, ds: str, run_id: str, params: dict) -> str:
        return quality_tasks.validate(ds=ds, run_id=run_id, params=params)

    @task
    def embed_catalog(*, params: dict) -> dict:
        return training_tasks.embed_catalog(params=params)

    @task
    def build_dataset(*, ds: str, run_id: str, params: dict) -> dict:
        return training_tasks.build_dataset(ds=ds, run_id=run_id, params=params)

    @task
    def publish_features(*, ds: str, run_id: str, params: dict) -> dict:
        return training_tasks.publish_features(ds=ds, run_id=run_id, params=params)

    @task
    def train(*, ds: str, params: dict) -> dict:
        return training_tasks.train(ds=ds, params=params)

    @task
    def evaluate(*, ds: str) -> dict:
        return promotion_tasks.evaluate(ds=ds)

    @task
    def export(*, ds: str) -> dict:
        return promotion_tasks.export(ds=ds)

    @task
    def gate(*, ds: str, params: dict) -> dict:
        return promotion_tasks.gate(ds=ds, params=params)

    @task
    def refit(*, ds: str, params: dict) -> dict:
        return promotion_tasks.refit(ds=ds, params=params)

    @task
    def register(*, ds: str, params: dict) -> dict:
        return promotion_tasks.register(ds=ds, params=params)

    approve = PromotionApproval(task_id="approve", gate_task_id="gate", register_task_id="register")

    @task(trigger_rule="none_failed_min_one_success")  # runs when approve is skipped; a Reject skips it
    def flip(decision: dict, *, ds: str, run_id: str, params: dict) -> dict:
        return promotion_tasks.flip(ds=ds, decision=decision, run_id=run_id, params=params)

    @task
    def retriever(*, ds: str, run_id: str, params: dict) -> dict:
        return retriever_tasks.retriever(ds=ds, run_id=run_id, params=params)

    decision = gate()
    checked, built = check_params(), build_dataset()
    validated, embedded = checked >> validate(), checked >> embed_catalog()
    [validated, embedded] >> built
    # its own branch: a failed or held retriever alerts but blocks none of the ranker's steps
    [validated, embedded] >> retriever()
    built >> publish_features()  # beside train: a held candidate or a failed flip does not stop it
    built >> train() >> evaluate() >> export() >> decision >> refit() >> register() >> approve >> flip(decision)


retrain_ranker()
