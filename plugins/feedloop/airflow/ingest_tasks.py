"""The Airflow-facing steps of ingestion: run the library, publish Asset events, return a summary.

Kept here (not in the DAG files) so the DAGs stay a table of contents and this glue is tested.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from feedloop.airflow import assets
from feedloop.core import utc
from feedloop.core.config import load_settings
from feedloop.ingest import replay, sink

log = logging.getLogger(__name__)


def run_sink(*, run_id: str, outlet_events=None) -> dict:
    """One bounded sink run; one Asset event per event-hour partition it touched."""
    settings = load_settings()
    report = sink.run(settings, run_id=run_id)
    log.info("ingested %s records (%s dead letters) in %s objects, stop: %s; manifest %s", report.records,
             report.deadletters, len(report.objects), report.stop_reason, report.run_id)
    if outlet_events is not None and report.objects:
        from airflow.sdk import Asset, AssetAlias

        alias = outlet_events[AssetAlias(assets.ENGAGEMENT_PARTITIONS_ALIAS)]
        for hour in report.hours:
            alias.add(Asset(assets.hour_partition_uri(settings, hour)), extra={"run_id": report.run_id})
        outlet_events[Asset(assets.engagement_uri(settings))].extra = {"hours": report.hours, "records": report.records}
    return _summary(report)


def run_replay(*, mode: str, start: str | None, end: str | None, partition: int | None,
               start_offset: int | None, end_offset: int | None) -> dict:
    """Replay from DAG params; a missing param for the chosen mode is a clear error."""
    settings = load_settings()
    if mode == "time":
        if not start or not end:
            raise ValueError("replay mode 'time' needs the params 'start' and 'end' (ISO date-times, UTC)")
        report = replay.replay_time(settings, start=utc.parse_typed(start), end=utc.parse_typed(end))
    else:
        if partition is None or start_offset is None or end_offset is None:
            raise ValueError("replay mode 'offsets' needs the params 'partition', 'start_offset' and 'end_offset'")
        report = replay.replay_offsets(settings, partition=partition, start=start_offset, end=end_offset)
    log.info("replayed %s chunks: %s objects unchanged, %s changed, %s created, %s left to a concurrent sink run",
             len(report.chunks), len(report.unchanged), len(report.changed), len(report.created), len(report.raced))
    return asdict(report)


def _summary(report: sink.RunReport) -> dict:
    return {"run_id": report.run_id, "records": report.records, "deadletters": report.deadletters,
            "objects": len(report.objects), "hours": report.hours, "stop_reason": report.stop_reason}
