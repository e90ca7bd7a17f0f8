"""`make demo`: the platform end to end on the embedded stack, then what happened and where to look."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import orjson

from feedloop import inventory, simulate, stack
from feedloop.airflow_api import AirflowApi
from feedloop.config import Settings
from feedloop.stack.services import AirflowService


def simulate_once(settings: Settings, *, start, days: int, echo: Callable[[str], None]) -> int:
    """Simulate the demo's days once per stack: re-running `make demo` must not re-send the same events."""
    marker = settings.state_path / "demo_simulated.json"
    if marker.exists():
        done = orjson.loads(marker.read_bytes())
        if done["start"] == str(start) and done["days"] == days:
            echo(f"   already simulated on this stack ({done['events']:,} events); `make clean` to start over")
            return done["events"]
    report = simulate.run(settings, start=start, days=days, events_per_day=settings.simulate.events_per_day,
                          ground_truth=settings.state_path / "ground_truth.json")
    echo(f"   {report.events:,} events ({report.requests:,} requests) -> Kafka topic {settings.kafka.topic} "
         f"in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s)")
    marker.write_bytes(orjson.dumps({"start": str(start), "days": days, "events": report.events}))
    return report.events


def airflow_api(settings: Settings) -> AirflowApi:
    service = AirflowService(settings)
    return AirflowApi.for_standalone(service.url, service.password_file())


def run_dag(api: AirflowApi, dag_id: str, *, echo: Callable[[str], None], logical_date: str | None = None,
            conf: dict | None = None) -> str:
    """Trigger a DAG run through the REST API and wait; a failed run stops the demo with its id."""
    api.wait_for_dag(dag_id)
    api.unpause(dag_id)
    run_id = api.trigger(dag_id, logical_date=logical_date, conf=conf)
    state = api.wait(dag_id, run_id)
    echo(f"   {dag_id} {run_id}: {state}")
    if state != "success":
        raise RuntimeError(f"{dag_id} run {run_id} {state}; see its task logs in the Airflow UI")
    return run_id


def run(settings: Settings, *, days: int | None = None, echo: Callable[[str], None] = print) -> dict:
    t0 = time.perf_counter()
    echo("== 1. embedded stack")
    services = stack.up(settings, echo=echo)
    days = days or settings.simulate.days
    start = datetime.now(timezone.utc).date() - timedelta(days=days)
    echo(f"== 2. simulate {days} day(s) of traffic from {start}")
    events = simulate_once(settings, start=start, days=days, echo=echo)
    echo("== 3. ingest through Airflow: trigger ingest_engagement and wait")
    api = airflow_api(settings)
    ingested = run_dag(api, "ingest_engagement", echo=echo)
    inventories = [inventory.day_inventory(settings, start + timedelta(days=d)) for d in range(days + 1)]
    for inv in inventories:
        echo(f"   dt={inv.day}: {inv.rows:,} events in {inv.objects} objects over {len(inv.hours)} hour partitions")
    landed = sum(inv.rows for inv in inventories)
    echo(f"   {landed:,} of {events:,} simulated events are in s3://{settings.s3.lake_bucket}/events/engagement/ "
         f"(last run {ingested})")
    summary = {"start": str(start), "days": days, "events": events, "ingested": landed,
               "seconds": round(time.perf_counter() - t0, 1)}
    echo("== done in {seconds}s. Where to look:".format(**summary))
    for s in services:
        for key, value in s.details.items():
            echo(f"   {s.title:<22} {key:<10} {value}")
    echo(f"   ground truth           {settings.state_path / 'ground_truth.json'}")
    echo("   stop everything with   make down")
    return summary
