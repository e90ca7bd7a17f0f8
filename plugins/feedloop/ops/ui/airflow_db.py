"""The few facts the pages take from Airflow's own metadata database, through the api-server's session.

Why the database and not S3: which Airflow run produced something (the ingest runs behind an hour
partition, a run's logical date, its register task's result) is Airflow's record; the pages run
inside the api-server, so they read it the way Airflow's own routes do. Kept in one module: the
only place that touches Airflow's ORM models.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session


def run_logical_date(session: Session, dag_id: str, run_id: str) -> tuple[bool, datetime | None]:
    """(the run exists, its logical date)."""
    from airflow.models.dagrun import DagRun

    row = session.execute(select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
    return (False, None) if row is None else (True, row[0])


def task_result(session: Session, dag_id: str, run_id: str, task_id: str) -> Any:
    """The return value (XCom) of a task of a run, or None."""
    from airflow.models.xcom import XComModel

    row = session.execute(select(XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
        XComModel.key == "return_value", XComModel.map_index == -1)).first()
    return None if row is None else XComModel.deserialize_value(row)


def existing_runs(session: Session, dag_id: str, run_ids: Iterable[str]) -> set[str]:
    """The run ids among `run_ids` that are runs of `dag_id` (so a link to them will answer)."""
    from airflow.models.dagrun import DagRun

    wanted = {r for r in run_ids if r}
    if not wanted:
        return set()
    return set(session.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(wanted))))


def asset_producers(session: Session, uris: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """{asset uri: [(dag_id, run_id), ...]} of the runs that emitted events for each asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel

    wanted = set(uris)
    if not wanted:
        return {}
    rows = session.execute(
        select(AssetModel.uri, AssetEvent.source_dag_id, AssetEvent.source_run_id)
        .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.uri.in_(wanted), AssetEvent.source_run_id.is_not(None))
        .order_by(AssetEvent.timestamp))
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uri, dag_id, run_id in rows:
        if (dag_id, run_id) not in found[uri]:
            found[uri].append((dag_id, run_id))
    return dict(found)
