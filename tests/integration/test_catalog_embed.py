"""`feedloop catalog embed` and the retrain DAG's embed_catalog task body against the real embedded S3.

Both are the same idempotent call: without a catalog they say so and succeed; with one, the first embeds
every item and the second finds nothing to do.
"""

from __future__ import annotations

import json
import uuid
from datetime import date

import pytest

from feedloop.airflow import training_tasks
from feedloop.content.item_embeddings import load_item_embeddings
from feedloop.ops import cli, simulate

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(embedded, store, monkeypatch):
    """The session's stack with a fresh lake bucket (also in the env, for the CLI and the task) and a small world."""
    bucket = f"content-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    monkeypatch.setenv("FEEDLOOP_S3__LAKE_BUCKET", bucket)
    return embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": bucket}),
        "simulate": embedded.simulate.model_copy(update={"users": 100, "items": 300, "authors": 20}),
    })


def catalog_embed(capsys) -> tuple[int, dict]:
    code = cli.main(["-o", "json", "catalog", "embed"])
    return code, json.loads(capsys.readouterr().out)


def test_the_cli_embeds_the_catalog_once_and_the_retrain_task_then_has_nothing_to_do(settings, store, capsys):
    code, missing = catalog_embed(capsys)
    assert (code, missing["status"]) == (0, "no-catalog")
    assert training_tasks.embed_catalog(params={})["status"] == "no-catalog"

    sim = simulate.Simulator(settings, start=date(2026, 11, 1), days=1, events_per_day=10, seed=5)
    simulate.write_catalog(settings, sim)
    code, first = catalog_embed(capsys)
    again = training_tasks.embed_catalog(params={})

    assert (code, first["status"], first["embedded"], first["skipped_no_text"]) == (0, "written", 300, 0)
    assert (again["status"], again["embedded"], again["kept"]) == ("unchanged", 0, 300)
    ids, matrix = load_item_embeddings(store, settings.s3.lake_bucket)
    assert sorted(ids) == sorted(sim.ids.item(i) for i in range(300)) and matrix.shape == (300, 256)
