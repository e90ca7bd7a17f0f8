"""Validate-task benchmark: the `validate` task of retrain_ranker as Airflow records it in the production profile.

    .venv/bin/python bench/validate_task.py [--events 20000] [--runs 3] [--no-worker-preload]

Starts `feedloop stack up --profile production` (scheduler, api-server, dag-processor, triggerer,
2 Celery workers on PostgreSQL + Redis, its own SeaweedFS and Tansu) on free ports with a fresh
metadata database, publishes one simulated day of ~N events to its Kafka, lands it in the lake with
a scheduled ingest_engagement run, then unpauses retrain_ranker (start_date = that day) so the
scheduler creates the day's run exactly as production would. Reports the `validate` task
instance's duration (start_date -> end_date) and where it went, from the task log's timestamps:
startup (fork, imports, DAG parse) up to the task body, validate_day, alerts, and the rest. The
anchor in the same run: quality.validate_day on the same day in a fresh child process (wall; its GX
import timed apart, as the workers preload GX).
Then stops the stack, drops the database and its Redis keys, and checks no process is left.
--no-worker-preload starts the workers without `production.worker_preload` (the "before"). --runs N
repeats all of it on N fresh stacks, one after another (the task time varies by 1-2 s from run to run).
Prints a table and writes bench/results/validate_task.json. Target (issue 16): <= 10 s of task time
for a 20,000-event day.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

DAY = datetime.now(timezone.utc).date() - timedelta(days=1)  # the scheduler's latest finished daily interval
RUN_TIMEOUT_S = 900
# Lines quality_tasks.validate logs at its phase boundaries (what the breakdown is read from).
MARKS = {"body": "validate task body started", "validated": "validate_day took", "alerted": "alerts took"}


def _free_base(n: int) -> int:
    """A base port P with P .. P+n-1 free (api-server, triggerer and worker log servers): never the defaults,
    below Linux's ephemeral range (32768+: a client socket took a port picked there before the server bound it)
    and above stack_environ's S3 / Kafka blocks (20000-30020)."""
    from feedloop.core.process import port_in_use

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(30_100, 32_700)
        if not any(port_in_use(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port block")


def _wait(predicate, *, timeout: float, what: str, poll: float = 1.0):
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:  # a busy api-server answers late: ask again
            value = None
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _scheduled_run(api, dag_id: str) -> str:
    """Unpause `dag_id` and return the id of the run the scheduler creates for its latest interval."""
    api.wait_for_dag(dag_id)
    api.unpause(dag_id)
    run = _wait(lambda: next(iter(api.dag_runs(dag_id)), None), timeout=120, what=f"the scheduled {dag_id} run")
    return run["dag_run_id"]


def _finished_ti(api, dag_id: str, run_id: str, task_id: str) -> dict:
    """The task instance once it succeeded or failed (a failed try waiting for its retry counts as failed)."""
    def done():
        ti = next(t for t in api.task_instances(dag_id, run_id) if t["task_id"] == task_id)
        return ti if ti["state"] in ("success", "failed", "up_for_retry") and ti["end_date"] else None

    return _wait(done, timeout=RUN_TIMEOUT_S, what=f"{dag_id}.{task_id} in {run_id}", poll=2)


def _task_log(settings, ti: dict) -> list[dict]:
    """The task instance's log lines (JSON, one a line) from the shared log folder."""
    from feedloop.ops.stack import production

    logs = production.airflow_home(settings) / "logs"
    found = [p for p in logs.rglob(f"attempt={ti['try_number']}.log")
             if f"task_id={ti['task_id']}" in str(p) and ti["dag_run_id"] in str(p)]
    if not found:
        return []
    lines = []
    for raw in found[0].read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def breakdown(ti: dict, lines: list[dict]) -> dict[str, float]:
    """Seconds per phase of the task instance, from its start_date / end_date and the marked log lines."""
    start, end = _ts(ti["start_date"]), _ts(ti["end_date"])
    at: dict[str, datetime] = {}
    out = {"task_s": (end - start).total_seconds()}
    for line in lines:
        event = str(line.get("event", ""))
        for key, mark in MARKS.items():
            if key not in at and event.startswith(mark) and line.get("timestamp"):
                at[key] = _ts(line["timestamp"])
        if (cpu := re.search(r"\(([\d.]+) s CPU", event)) and event.startswith(MARKS["validated"]):
            out["validate_day_cpu_s"] = float(cpu.group(1))
    if ti.get("queued_when"):
        out["queued_to_start_s"] = (start - _ts(ti["queued_when"])).total_seconds()
    if {"body", "validated", "alerted"} <= at.keys():
        out["startup_s"] = (at["body"] - start).total_seconds()
        out["validate_day_s"] = (at["validated"] - at["body"]).total_seconds()
        out["alerts_s"] = (at["alerted"] - at["validated"]).total_seconds()
        out["after_body_s"] = (end - at["alerted"]).total_seconds()
    return {k: round(v, 2) for k, v in out.items()}


def child() -> None:
    """The anchor: validate DAY with the settings from env in this fresh process; print wall seconds.

    GX is imported first and timed apart (validate_day would import it itself), so validate_day_s
    compares with the task's validate_day when its worker preloaded GX.
    """
    t0 = time.perf_counter()
    from feedloop import quality
    from feedloop.core.config import load_settings

    t1 = time.perf_counter()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations  # noqa: F401

    t2, cpu = time.perf_counter(), time.process_time()
    try:
        result = quality.validate_day(load_settings(), DAY, run_id="bench-anchor")
    except quality.ValidationFailed as exc:
        result = exc.result
    print(json.dumps({"validate_day_s": round(time.perf_counter() - t2, 2),
                      "validate_day_cpu_s": round(time.process_time() - cpu, 2), "gx_import_s": round(t2 - t1, 2),
                      "import_s": round(t1 - t0, 2), "verdict": result.summary["verdict"]}))




def run(events: int, preload: bool) -> dict:
    from sqlalchemy.engine import make_url

    from feedloop.core.config import load_settings
    from feedloop.core.streams import ensure_topic
    from feedloop.ops import simulate, stack
    from feedloop.ops.stack import production
    from tests.conftest import stack_environ
    from tests.support import production_cleanup

    state = Path(tempfile.mkdtemp(prefix="feedloop-bench-vtask-"))
    database = f"feedloop_bench_{uuid.uuid4().hex[:8]}"
    base = load_settings()
    env = {
        **stack_environ(state, airflow=True),
        "FEEDLOOP_STACK__AIRFLOW_PORT": str(_free_base(5)),
        "FEEDLOOP_STACK__PROFILE": "production",
        "FEEDLOOP_STACK__READY_TIMEOUT_S": "300",
        "FEEDLOOP_PRODUCTION__METADATA_DB_URL": make_url(base.production.metadata_db_url).set(
            database=database).render_as_string(hide_password=False),
        "FEEDLOOP_RETRAIN__START_DATE": DAY.isoformat(),  # the scheduler's one daily run is for DAY
        **({} if preload else {"FEEDLOOP_PRODUCTION__WORKER_PRELOAD": "[]"}),
    }
    os.environ.update(env)  # the stack's processes and the anchor child inherit it
    settings = load_settings()
    out: dict = {"events_target": events, "worker_preload": list(settings.production.worker_preload), "day": str(DAY)}
    t0 = time.perf_counter()
    try:
        stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
        out["stack_up_s"] = round(time.perf_counter() - t0, 1)
        ensure_topic(settings.kafka)
        sim = simulate.Simulator(settings, start=DAY, days=1, events_per_day=events, seed=settings.simulate.seed)
        simulate.write_catalog(settings, sim)
        out["events_published"] = simulate.produce(settings, sim.records(simulate.SimulationReport(DAY, 1)))
        api = production.api(settings)
        api.http.timeout = 60
        ingest = _scheduled_run(api, "ingest_engagement")
        sink = _finished_ti(api, "ingest_engagement", ingest, "sink")
        api.pause("ingest_engagement")  # no further 15-minute runs while the retrain runs
        if sink["state"] != "success":
            raise RuntimeError(f"ingest_engagement {ingest} {sink['state']}")
        retrain = _scheduled_run(api, "retrain_ranker")
        ti = _finished_ti(api, "retrain_ranker", retrain, "validate")
        out["tasks"] = {t["task_id"]: t["state"] for t in api.task_instances("retrain_ranker", retrain)}
        if ti["state"] != "success":
            raise RuntimeError(f"validate ended {ti['state']}; see {production.airflow_home(settings) / 'logs'}")
        out.update(breakdown(ti, _task_log(settings, ti)), hostname=ti["hostname"])
        anchor = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True)
        if anchor.returncode:
            raise RuntimeError(anchor.stderr[-4000:])
        out["anchor"] = json.loads(anchor.stdout.strip().splitlines()[-1])
    finally:
        stack.down(settings, echo=lambda m: None)
        production_cleanup.drop(settings, database)
        left = production_cleanup.processes_of(state)
    if left:
        raise RuntimeError(f"processes left after `down`: {left}")
    return out


ROWS = [("validate task (start -> end)", lambda r: r.get("task_s")),
        ("  startup: fork, imports, DAG parse", lambda r: r.get("startup_s")),
        ("  validate_day", lambda r: r.get("validate_day_s")),
        ("    of which CPU of the task process", lambda r: r.get("validate_day_cpu_s")),
        ("  alerts (send.validation_incidents)", lambda r: r.get("alerts_s")),
        ("  after the body (XCom, state)", lambda r: r.get("after_body_s")),
        ("queued -> start", lambda r: r.get("queued_to_start_s")),
        ("anchor: validate_day, fresh process", lambda r: r["anchor"]["validate_day_s"]),
        ("  of which CPU of that process", lambda r: r["anchor"].get("validate_day_cpu_s")),
        ("anchor: import great_expectations", lambda r: r["anchor"]["gx_import_s"]),
        ("anchor: import feedloop.quality", lambda r: r["anchor"]["import_s"])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1, help="fresh stacks one after another; the median is quoted")
    parser.add_argument("--no-worker-preload", action="store_true", help="workers import nothing ahead (before)")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: still stop the stack, drop the DB
    if args.child:
        child()
        return
    load_before = os.getloadavg()
    runs = [run(args.events, preload=not args.no_worker_preload) for _ in range(args.runs)]
    load = os.getloadavg()
    r = runs[0]
    print(f"\n{r['events_published']:,} events on {r['day']}, worker_preload "
          f"{'on' if r['worker_preload'] else 'off'}, {len(runs)} run(s) on {', '.join(x['hostname'] for x in runs)}")
    print(f"  {'seconds':38} " + " ".join(f"{'run ' + str(i + 1):>7}" for i in range(len(runs))) + f" {'median':>7}")
    for name, get in ROWS:
        values = [get(x) for x in runs]
        known = [v for v in values if v is not None]
        cells = " ".join(f"{v if v is not None else 'n/a':>7}" for v in values)
        print(f"  {name:38} {cells} {round(statistics.median(known), 2) if known else 'n/a':>7}")
    print(f"  other tasks: {r['tasks']}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores "
          f"(before: {load_before[0]:.2f})")
    path = ROOT / "bench" / "results" / "validate_task.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine_cpus": os.cpu_count(), "load_average": [round(x, 2) for x in load],
                                "load_average_before": [round(x, 2) for x in load_before], "runs": runs},
                               indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
