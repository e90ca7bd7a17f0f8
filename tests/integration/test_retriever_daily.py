"""Two days of the retriever against the real embedded S3: simulated events in a lake, train, gate, register,
flip retriever/live.json; the second day is judged beside the first day's version, rebuilt from its files."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import simlake
from bench.retrieval import START
from feedloop.core import layout
from feedloop.ops.simulate import Simulator
from feedloop.promotion.registry import Registry
from feedloop.promotion.retriever_daily import run_day
from feedloop.retrieval import examples

pytestmark = pytest.mark.integration
DAYS = 5


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@pytest.fixture
def settings(store, embedded):
    """A lake and a models bucket of its own, holding DAYS simulated days and the catalog."""
    lake, models = (f"retr-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("lake", "models"))
    for bucket in (lake, models):
        store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": lake, "models_bucket": models}),
        "simulate": embedded.simulate.model_copy(update={"users": 600, "items": 1200, "authors": 60}),
        "dataset": embedded.dataset.model_copy(update={"window_days": 4}),
        "retrieval": embedded.retrieval.model_copy(update={"gate_min_vs_popularity": 0.0, "gate_min_users": 1,
                                                          "gate_on": "engaged"})})  # the wiring, not the metric
    sim = Simulator(settings, start=START, days=DAYS, events_per_day=12_000)
    simlake.write_events(settings, store, sim)
    store.put(lake, layout.CATALOG_ITEMS_KEY, _parquet(sim.world.catalog(start=START, ids=sim.ids)))
    return settings


def test_the_first_day_goes_live_and_the_next_is_judged_beside_it(settings, store):
    first_day = START + timedelta(days=DAYS - 2)
    first = run_day(settings, day=first_day, store=store)

    registry = Registry(store, settings.s3.models_bucket, layout.RETRIEVER)
    assert first.parity["passed"] and first.decision.champion is None
    assert first.pointer is not None and registry.live().version == first.version
    assert registry.live().pointer["logical_date"] == first_day.isoformat()

    second = run_day(settings, day=first_day + timedelta(days=1), store=store)

    assert second.decision.champion is not None  # the live version's recall on the same day, from its files
    assert {r["name"] for r in second.recall} == {"candidate", "live", "popularity"}
    assert registry.versions() == [first.version, second.version]
    assert registry.live().version == (second.version if second.decision.promote else first.version)

    again = run_day(settings, day=first_day + timedelta(days=1), store=store)  # an Airflow retry or a re-run of D

    assert again.resumed and again.version == second.version and again.decision == second.decision
    assert again.pointer is None and registry.versions() == [first.version, second.version]
    assert len(registry.history()) == (2 if second.decision.promote else 1)  # no second flip
    assert second.weighted["models"].keys() == {"candidate", "live", "popularity"}
    assert set(second.weighted["differences"]) == {"candidate-popularity", "candidate-live"}


def test_quarantined_hours_are_left_out_of_the_examples(settings, store):
    day = START + timedelta(days=1)
    whole, _ = examples.lake_window(settings, store, start=START, end=day + timedelta(days=1))
    kept, _ = examples.lake_window(settings, store, start=START, end=day + timedelta(days=1),
                                   excluded={f"dt={START.isoformat()}/hour=00"})

    assert set(kept["d"].to_pylist()) == {day} and whole.num_rows > kept.num_rows > 0


def test_the_dag_task_skips_a_lake_with_no_catalog_naming_what_to_publish(settings, store, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from feedloop.airflow import retriever_tasks

    store.delete(settings.s3.lake_bucket, layout.CATALOG_ITEMS_KEY)
    run = settings.model_copy(update={"retrain": settings.retrain.model_copy(update={"start_date": START})})
    monkeypatch.setattr(retriever_tasks, "run_settings", lambda params: run)
    with pytest.raises(AirflowSkipException, match=f"no item catalog at s3://{settings.s3.lake_bucket}/"):
        retriever_tasks.retriever(ds=(START + timedelta(days=DAYS - 1)).isoformat(), run_id="manual__1",
                                  params={"promotion_mode": "gate"})
    assert not list(store.list_keys(settings.s3.models_bucket, "retriever/"))
