"""What the browser tests look at, made with the library instead of the whole pipeline (minutes, not hours).

- ranker versions: training runs laid out as the train step leaves them (tests/support/rankerdata.py),
  then the real promotion steps (evaluate, export, gate, register with report.html, flip);
- a year of versions: registered as the registry stores them, with a pointer flip per day;
- a quarantined hour: events through Kafka and the real ingest_engagement DAG (so Airflow records
  which run wrote each hour), validated by the library under a retrain_ranker run id;
- days of simulated traffic for real retrain_ranker runs: through Kafka (a topic of their own) and the
  ingest library into the lake, the first days validated as the daily runs before them would have.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import orjson

from feedloop import quality
from feedloop.promotion import steps as promotion
from feedloop.promotion.flip import flip_pointer
from feedloop.promotion.registration import register_candidate
from feedloop.ops import simulate
from feedloop.core.config import Settings
from feedloop.promotion.registry import Registry
from tests.support import kafka_helpers, lakedata, rankerdata

RETRAIN, INGEST = "retrain_ranker", "ingest_engagement"


def promote_days(settings: Settings, days: list[date]) -> list[str]:
    """One real version per day (a better model from the second day on), each made live by its flip."""
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(settings)
    frame = rankerdata.day_frame(seed=1)
    holdout = rankerdata.day_frame(seed=99)
    models = [rankerdata.train_model(frame, rounds=20), rankerdata.train_model(frame, rounds=60)]
    versions = []
    for i, day in enumerate(days):
        ds = day.isoformat()
        lineage = {"window_start": str(day - timedelta(days=3)), "window_end": str(day + timedelta(days=1)),
                   "rows": 2400, "content_hash": f"browser-{ds}"}
        rankerdata.write_run(store, settings, ds, model_text=models[min(i, 1)], holdout=holdout, lineage=lineage)
        version = promotion.evaluate_candidate(ds=ds, settings=settings).version
        promotion.export_candidate(ds=ds, settings=settings)
        gate = promotion.gate_candidate(ds=ds, settings=settings)
        register_candidate(ds=ds, settings=settings)
        flip_pointer(ds=ds, gate=gate, promoted_by=f"{RETRAIN} scheduled__{ds}T00:00:00+00:00",
                     settings=settings)
        versions.append(version)
    return versions


def register_year(registry: Registry, first_day: date, days: int, *, threads: int = 8) -> list[str]:
    """`days` daily versions as register_candidate stores them (small model bytes, a full-size manifest
    with a 28-day lineage, metrics.json with champion figures, report.html), then a flip per day."""
    def one(k: int) -> str:
        day = first_day + timedelta(days=k)
        version = f"{day}-{k:010x}"
        champion = f"{day - timedelta(days=1)}-{k - 1:010x}" if k else None
        auc, ndcg = 0.70 + (k % 17) / 1000, 0.40 + (k % 23) / 1000
        inputs = {f"events/engagement/dt={day - timedelta(days=d)}/hour={h:02d}/engagement+0+{k:020d}.parquet":
                  f"{d:08x}{h:024x}" for d in range(28) for h in range(24)}
        lineage = {"day": str(day), "window_start": str(day - timedelta(days=27)),
                   "window_end": str(day + timedelta(days=1)), "content_hash": f"{k:064x}", "inputs": inputs,
                   "rows": {"train": 900_000, "valid": 50_000, "holdout": 50_000}}
        manifest = {"feature_manifest": {"objective": "lambdarank", "features": []}, "lineage": lineage,
                    "params": {"num_leaves": 63}, "logical_date": str(day), "registered_at": f"{day}T01:00:00Z",
                    "code_version": "git:0000000", "parity": {"passed": True, "max_abs_diff": 1e-6},
                    "gate": {"promotable": True, "champion": champion, "summary": "passed 12 checks"},
                    "metrics": {"auc": auc, "ndcg@10": ndcg, "map": 0.3, "mrr": 0.4, "groups": 5000}}
        metrics = {"candidate": {"overall": {"auc": auc, "ndcg@10": ndcg}},
                   "champion": champion and {"version": champion,
                                             "overall": {"auc": auc - 0.002, "ndcg@10": ndcg - 0.001}}}
        files = {"model.txt": f"tree {k}".encode(), "model.onnx": f"onnx {k}".encode(),
                 "metrics.json": orjson.dumps(metrics),
                 "report.html": f"<html><body>report {version}</body></html>".encode()}
        registry.register(version=version, files=files, manifest=manifest)
        return version

    with ThreadPoolExecutor(max_workers=threads) as pool:
        versions = list(pool.map(one, range(days)))
    for version in versions:
        registry.flip(version=version, by=f"{RETRAIN} scheduled__{version[:10]}T00:00:00+00:00",
                      reason=f"retrain {version[:10]}: passed 12 checks")
    return versions


def trigger_paused(api, dag_id: str, day: date) -> str:
    """A run of `day` (its data interval is the day) on a paused DAG: it exists in Airflow and stays queued."""
    interval = (f"{day}T00:00:00+00:00", f"{day + timedelta(days=1)}T00:00:00+00:00")
    api.wait_for_dag(dag_id)
    return api.trigger(dag_id, run_id=f"ui_test__{day}", logical_date=interval[0], data_interval=interval)


def quarantined_day(settings: Settings, api, day: date, *, hours: tuple[int, ...], bad_hour: int) -> dict[str, Any]:
    """Good hours and one with positions beyond max_position, ingested by the real DAG, then validated."""
    events = []
    for hour in hours:
        evs = lakedata.hour_events(day, hour)
        if hour == bad_hour:
            evs = [{**e, "position": 999} if e["event_type"] == "impression" and i % 7 == 0 else e
                   for i, e in enumerate(evs)]
        events += evs
    kafka_helpers.send_events(settings, settings.kafka.topic, events, partition=None)
    api.wait_for_dag(INGEST)
    api.unpause(INGEST)  # its schedule starts a run now; that run lands the events
    _wait_for_ingest(settings, api, day, hours)
    validation_run = trigger_paused(api, RETRAIN, day)
    try:
        result = quality.validate_day(settings, day, run_id=validation_run)
    except quality.ValidationFailed as failed:
        result = failed.result
    return {"validation_run": validation_run, "summary": result.summary}


def _wait_for_ingest(settings: Settings, api, day: date, hours: tuple[int, ...], timeout: float = 600) -> None:
    """Until every hour has landed and no ingest run is still going (their Asset events are then recorded)."""
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        landed = {int(k.split("hour=")[1][:2]) for k in store.list_keys(settings.s3.lake_bucket,
                                                                      f"events/engagement/dt={day}/")}
        states = [r["state"] for r in api.dag_runs(INGEST)]
        if landed >= set(hours) and "success" in states and not {"queued", "running"} & set(states):
            return
        time.sleep(2)
    raise AssertionError(f"{INGEST} did not land hours {hours} of {day} within {timeout:.0f}s; runs: {states}")


def simulated_days(settings: Settings, api, first_day: date, days: int, *, validated: int,
                   events_per_day: int = 3000) -> None:
    """`days` days of simulated traffic from first_day, landed by a run of the real ingest DAG; the
    first `validated` days validated (by the library, as the daily runs before them would have)."""
    sim = simulate.Simulator(settings, start=first_day, days=days, events_per_day=events_per_day, seed=3)
    simulate.write_catalog(settings, sim)
    simulate.produce(settings, sim.records(simulate.SimulationReport(first_day, days)))
    api.wait_for_dag(INGEST)
    api.unpause(INGEST)
    run = api.trigger(INGEST)
    state = api.wait(INGEST, run, timeout=600, poll=2)
    assert state == "success", f"{INGEST} run {run} ended {state}"
    for d in range(validated):
        quality.validate_day(settings, first_day + timedelta(days=d), run_id="earlier daily run")
