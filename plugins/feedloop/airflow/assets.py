"""Airflow Assets named by URI: DAGs are linked by the data they produce, not by schedules."""

from __future__ import annotations

from feedloop.core import layout as lake
from feedloop.core.config import Settings


def engagement_uri(settings: Settings) -> str:
    """The whole engagement event log; every ingest run that lands data updates it."""
    return f"s3://{settings.s3.lake_bucket}/{lake.EVENTS_PREFIX.rstrip('/')}"


def hour_partition_uri(settings: Settings, hour_prefix: str) -> str:
    """One event-hour partition, e.g. s3://feedloop-lake/events/engagement/dt=2026-11-20/hour=03."""
    return f"s3://{settings.s3.lake_bucket}/{hour_prefix.rstrip('/')}"


ENGAGEMENT_PARTITIONS_ALIAS = "feedloop-engagement-partitions"
