"""`make demo`: the platform end to end on the embedded stack, then what happened and where to look."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import orjson

from feedloop import inventory, simulate, stack
from feedloop.airflow_api import AirflowApi
from feedloop.config import Settings, load_settings
from feedloop.registry import Registry
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


def retrain_days(api: AirflowApi, settings: Settings, *, days: int, echo: Callable[[str], None],
                 timeout: float = 1800) -> list[dict]:
    """Unpause retrain_ranker: catchup runs one per simulated day, in order; wait and tabulate them."""
    api.wait_for_dag("retrain_ranker")
    api.unpause("retrain_ranker")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.dag_runs("retrain_ranker")
        if len(runs) >= days and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(5)
    else:
        raise RuntimeError(f"retrain_ranker catchup not finished after {timeout:.0f}s; see the Airflow UI")
    rows = []
    for r in runs:
        tasks = {t["task_id"]: t["state"] for t in api.task_instances("retrain_ranker", r["dag_run_id"])}
        row = {"day": r["logical_date"][:10], "run": r["state"], "tasks": tasks}
        if tasks.get("evaluate") == "success":
            row["evaluation"] = api.xcom("retrain_ranker", r["dag_run_id"], "evaluate")
        if tasks.get("gate") == "success":
            row["gate"] = api.xcom("retrain_ranker", r["dag_run_id"], "gate")
        rows.append(row)
        echo("   " + _retrain_line(row))
    return rows


def _retrain_line(row: dict) -> str:
    tasks = row["tasks"]
    if tasks.get("build_dataset") == "skipped":
        return f"{row['day']}  validated; training skipped (fewer than dataset.min_window_days days of data)"
    if "evaluation" not in row:
        failed = [t for t, s in tasks.items() if s == "failed"]
        return f"{row['day']}  {row['run']}: failed at {', '.join(failed) or '?'} (see the task log in the Airflow UI)"
    ev, gate = row["evaluation"], row.get("gate", {})
    flipped = tasks.get("flip") == "success"
    overall = ev["overall"]
    return (f"{row['day']}  candidate {ev['version']}  AUC {overall['auc']:.3f}  NDCG@10 {overall['ndcg@10']:.3f}  "
            f"vs champion {ev['champion'] or '-'}: {'PROMOTED' if flipped else 'held: ' + gate.get('summary', '?')}")


def run(settings: Settings, *, days: int | None = None, echo: Callable[[str], None] = print) -> dict:
    t0 = time.perf_counter()
    days = days or settings.simulate.days
    start = datetime.now(timezone.utc).date() - timedelta(days=days)
    if "FEEDLOOP_RETRAIN__START_DATE" not in os.environ:
        # The platform's history starts with the simulated traffic: catchup runs from there.
        os.environ["FEEDLOOP_RETRAIN__START_DATE"] = start.isoformat()
        settings = load_settings()
    echo("== 1. embedded stack")
    services = stack.up(settings, echo=echo)
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
    echo(f"== 4. daily retrain through Airflow: catchup of retrain_ranker for {start} .. "
         f"{start + timedelta(days=days - 1)} (validate, build, train, evaluate, export, gate, register, flip)")
    retrains = retrain_days(api, settings, days=days, echo=echo)
    live = Registry.from_settings(settings).live()
    if live is None:
        echo("   no model is live yet (see the table above for why)")
    else:
        metrics = Registry.from_settings(settings).read_json(live.version, "metrics.json")["candidate"]["overall"]
        echo(f"   LIVE: {live.version}  ({live.pointer['uri']}, sha256 {live.pointer['sha256'][:12]}...)")
        echo("   holdout metrics: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    summary = {"start": str(start), "days": days, "events": events, "ingested": landed,
               "retrain": retrains, "live": live.version if live else None,
               "seconds": round(time.perf_counter() - t0, 1)}
    echo("== done in {seconds}s. Where to look:".format(**summary))
    for s in services:
        for key, value in s.details.items():
            echo(f"   {s.title:<22} {key:<10} {value}")
    echo(f"   ground truth           {settings.state_path / 'ground_truth.json'}")
    echo(f"   validation reports     s3://{settings.s3.lake_bucket}/validation/dt=<day>/index.html")
    echo(f"   model versions         s3://{settings.s3.models_bucket}/ranker/versions/ (report.html each); "
         "`feedloop model list`")
    echo("   stop everything with   make down")
    return summary
