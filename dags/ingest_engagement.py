"""
### Ingest engagement events

Kafka topic `engagement` → event-time Parquet partitions on S3
(`events/engagement/dt=YYYY-MM-DD/hour=HH/`), exactly once.

Each run is bounded (stops when a poll is empty, at `ingest.max_records_per_run` or at
`ingest.max_run_seconds`), writes objects named by topic, partition and chunk offsets, then a
checkpoint, then commits the Kafka offsets — so a retry or a crashed run rewrites the same
objects instead of adding rows. Bad records go to `deadletter/engagement/` with their reason.
Emits an Asset event per event-hour partition touched.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetAlias, dag, task

from feedloop.airflow import notifier
from feedloop.airflow import assets
from feedloop.core.config import load_settings
from feedloop.airflow import ingest_tasks as tasks

SETTINGS = load_settings()


@dag(
    schedule=SETTINGS.ingest.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=notifier.default_args(retries=3, retry_delay=timedelta(seconds=20)),
    tags=["feedloop", "ingest"],
)
def ingest_engagement():
    @task(outlets=[Asset(assets.engagement_uri(SETTINGS)), AssetAlias(assets.ENGAGEMENT_PARTITIONS_ALIAS)])
    def sink(*, run_id: str | None = None, outlet_events=None) -> dict:
        return tasks.run_sink(run_id=run_id, outlet_events=outlet_events)

    sink()


ingest_engagement()
