"""Incremental item embeddings: only new or changed texts are embedded, nothing is written twice, races lose loudly.

The store is the in-memory S3 with S3's conditional-put rules (tests/unit/ingest/fakestore.py); the
embedding model is the real one, on a few dozen texts.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.content.embedder import load_embedder
from feedloop.content.item_embeddings import embed_catalog, load_item_embeddings, schema, text_sha256
from feedloop.core import layout as lake
from feedloop.core.config import ContentSettings
from feedloop.core.storage import PreconditionFailed
from tests.unit.ingest.fakestore import FakeStore, Interleaved

BUCKET = "lake"
EMBEDDER = load_embedder(ContentSettings())
T1, T2 = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 2, tzinfo=timezone.utc)


def catalog(items: dict[str, tuple[str | None, str | None]], *, with_text: bool = True) -> bytes:
    """A catalog object: item_id -> (title, description), tenant from the id's prefix."""
    columns = {"item_id": list(items), "tenant_id": [i.split("-")[0] for i in items], "topic": ["topic-0"] * len(items)}
    if with_text:
        columns |= {"title": [t for t, _ in items.values()], "description": [d for _, d in items.values()]}
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


ITEMS = {f"acme-i{i:03d}": (f"Guitar album {i}", "A concert of songs by the band.") for i in range(20)}


def publish(store: FakeStore, items: dict, **kwargs) -> None:
    store.put(BUCKET, lake.CATALOG_ITEMS_KEY, catalog(items, **kwargs))


def stored(store: FakeStore) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(BUCKET, lake.CATALOG_EMBEDDINGS_KEY).body))


@pytest.fixture
def store() -> FakeStore:
    store = FakeStore()
    publish(store, ITEMS)
    return store


def test_the_first_run_embeds_every_item_in_the_contracts_schema(store):
    result = embed_catalog(store, BUCKET, EMBEDDER, now=T1)

    table = stored(store)
    assert (result.status, result.embedded, result.kept, result.catalog_items) == ("written", 20, 0, 20)
    assert table.schema == schema(256)
    assert table["item_id"].to_pylist() == sorted(ITEMS)
    assert set(table["model"].to_pylist()) == {EMBEDDER.model_id} and EMBEDDER.model_id.startswith("wordllama==")
    assert table["text_sha256"][0].as_py() == text_sha256("Guitar album 0\nA concert of songs by the band.")
    ids, matrix = load_item_embeddings(store, BUCKET)
    assert ids == sorted(ITEMS) and matrix.dtype == np.float32 and matrix.shape == (20, 256)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)


def test_a_second_run_embeds_nothing_and_writes_nothing(store):
    embed_catalog(store, BUCKET, EMBEDDER, now=T1)
    etag = store.get(BUCKET, lake.CATALOG_EMBEDDINGS_KEY).etag

    result = embed_catalog(store, BUCKET, EMBEDDER, now=T2)

    assert (result.status, result.embedded, result.kept) == ("unchanged", 0, 20)
    assert store.get(BUCKET, lake.CATALOG_EMBEDDINGS_KEY).etag == etag


def test_a_changed_text_and_a_new_item_are_embedded_and_every_other_row_is_kept_as_it_was(store):
    embed_catalog(store, BUCKET, EMBEDDER, now=T1)
    before = stored(store)
    publish(store, {**ITEMS, "acme-i005": ("Pasta recipe", "Dinner in the kitchen."), "acme-i999": ("New", "Item.")})

    result = embed_catalog(store, BUCKET, EMBEDDER, now=T2)

    after = stored(store)
    assert (result.embedded, result.kept, result.removed) == (2, 19, 0)
    rows_before, rows_after = ({r["item_id"]: r for r in t.to_pylist()} for t in (before, after))
    assert {i for i, r in rows_after.items() if r["embedded_at"] == T2} == {"acme-i005", "acme-i999"}
    assert rows_after["acme-i005"]["text_sha256"] != rows_before["acme-i005"]["text_sha256"]
    assert all(rows_after[i] == rows_before[i] for i in ITEMS if i != "acme-i005")


def test_another_model_re_embeds_every_item(store):
    embed_catalog(store, BUCKET, EMBEDDER, now=T1)
    smaller = load_embedder(ContentSettings(dim=64))

    result = embed_catalog(store, BUCKET, smaller, now=T2)

    assert (result.embedded, result.kept) == (20, 0)
    assert stored(store).schema == schema(64) and set(stored(store)["model"].to_pylist()) == {smaller.model_id}
    assert smaller.model_id != EMBEDDER.model_id


def test_items_gone_from_the_catalog_lose_their_rows(store):
    embed_catalog(store, BUCKET, EMBEDDER, now=T1)
    publish(store, dict(list(ITEMS.items())[:15]))

    result = embed_catalog(store, BUCKET, EMBEDDER, now=T2)

    assert (result.status, result.embedded, result.kept, result.removed) == ("written", 0, 15, 5)
    assert stored(store).num_rows == 15


def test_items_without_text_are_skipped_and_counted():
    store = FakeStore()
    publish(store, {"acme-i1": ("Guitar", None), "acme-i2": (None, None), "acme-i3": ("  ", ""),
                    "acme-i4": (None, "A concert.")})

    result = embed_catalog(store, BUCKET, EMBEDDER, now=T1)

    assert (result.embedded, result.skipped_no_text) == (2, 2)
    assert load_item_embeddings(store, BUCKET)[0] == ["acme-i1", "acme-i4"]


def test_a_catalog_without_text_columns_embeds_nothing_and_writes_nothing():
    store = FakeStore()
    publish(store, ITEMS, with_text=False)

    result = embed_catalog(store, BUCKET, EMBEDDER, now=T1)

    assert (result.status, result.embedded, result.skipped_no_text) == ("unchanged", 0, 20)
    assert store.get(BUCKET, lake.CATALOG_EMBEDDINGS_KEY) is None


def test_no_catalog_is_no_error_and_no_write():
    store = FakeStore()

    result = embed_catalog(store, BUCKET, EMBEDDER)

    assert result.status == "no-catalog" and store.objects == {}
    ids, matrix = load_item_embeddings(store, BUCKET)
    assert ids == [] and matrix.shape == (0, 0)


@pytest.mark.parametrize("first", [pytest.param(True, id="both-first-runs"),
                                   pytest.param(False, id="both-update-the-same-object")])
def test_of_two_runs_at_once_the_later_put_loses_and_changes_nothing(store, first):
    if not first:
        embed_catalog(store, BUCKET, EMBEDDER, now=T1)
        publish(store, {**ITEMS, "acme-i999": ("New", "Item.")})
    # The other run writes between this run's two reads and its put (store calls: catalog, embeddings, put).
    racing = Interleaved(store, 2, lambda: embed_catalog(store, BUCKET, EMBEDDER, now=T2))

    with pytest.raises(PreconditionFailed):
        embed_catalog(racing, BUCKET, EMBEDDER, now=T1)

    assert racing.ran and set(stored(store)["embedded_at"].to_pylist()) >= {T2}
    assert embed_catalog(store, BUCKET, EMBEDDER).status == "unchanged"


def test_the_embedder_returns_unit_float32_rows_and_refuses_a_blank_text():
    vectors = EMBEDDER.embed(["guitar concert", "pasta recipe"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert EMBEDDER.embed([]).shape == (0, 256)
    with pytest.raises(ValueError, match="no tokens"):
        EMBEDDER.embed(["guitar", ""])
