"""
### Replay engagement events

Re-ingest a time range (event hours) or an offset range of one partition from Kafka. Every
affected chunk is rebuilt from its first offset and rewritten under the same object names: the
same bytes when the log is unchanged, and never a duplicate. Trigger it from the UI with params:
times are typed as text in UTC (`YYYY-MM-DDTHH:MM`), so no browser shifts them to local time; a
range that does not fit its mode fails the run at once, naming the param.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from feedloop.airflow import notifier
from feedloop.core.config import load_settings
from feedloop.airflow import ingest_tasks as tasks
from feedloop.airflow.params import in_task
from feedloop.airflow.params import replay as replay_params

SETTINGS = load_settings()


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=notifier.default_args(retries=1, retry_delay=timedelta(seconds=20)),
    tags=["feedloop", "ingest", "replay"],
    params=replay_params(SETTINGS),
)
def replay_engagement():
    @task
    def replay(*, params: dict) -> dict:
        return tasks.run_replay(**in_task("replay_engagement", params, SETTINGS))

    replay()


replay_engagement()
