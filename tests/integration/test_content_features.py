"""The content-similarity features on the golden lake: the training set's values are exactly what a pod computes
from the snapshot of the same day, and without an embeddings object they are NaN and nothing else changes."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from feedloop.core import layout
from feedloop.features import dataset
from feedloop.features import definitions as features
from feedloop.serving.snapshot import FILES, Snapshot
from tests.integration.test_dataset import read_split, write_catalog, write_embeddings, write_events
from tests.integration.test_dataset_golden import END, GOLDEN, _embeddings, _lake, _settings, assert_tables_equal

pytestmark = pytest.mark.integration
CONTENT = [features.column(n) for n in features.CONTENT_COLUMNS]


@pytest.fixture
def lake(embedded, store):
    settings = _settings(embedded)
    evs, catalog = _lake()
    write_catalog(store, settings, catalog)
    write_events(store, settings, evs)
    return settings, catalog


def _snapshot(store, settings, result) -> Snapshot:
    prefix = result.uri.split("/", 3)[3] + "snapshot/"
    return Snapshot.from_parquet({name: store.get(settings.s3.lake_bucket, prefix + name).body for name in FILES})


def test_a_pod_computes_the_training_rows_content_features_from_the_snapshot_of_that_day(lake, store):
    settings, catalog = lake
    write_embeddings(store, settings, _embeddings(catalog))
    try:
        dataset.build(settings, end=END, store=store)             # rows of day END - 1, as of its start
        served = _snapshot(store, settings, dataset.build(settings, end=END - timedelta(days=1), store=store))
    finally:
        store.delete(settings.s3.lake_bucket, layout.CATALOG_EMBEDDINGS_KEY)
    rows = read_split(store, settings, END - timedelta(days=1), "holdout")
    rows = rows.filter(np.asarray(rows["day"].to_pylist()) == END - timedelta(days=1))
    checked = known = 0
    for request in sorted(set(rows["request_id"].to_pylist())):
        r = rows.filter(np.asarray(rows["request_id"].to_pylist()) == request)
        items = r["item_id"].to_pylist()
        inputs = served.inputs(tenant_id=r["tenant_id"][0].as_py(), user_id=r["user_id"][0].as_py(),
                               surface=r["surface"][0].as_py(), device=r["device"][0].as_py(), request_ts=0.0,
                               item_ids=items, author_ids=r["author_id"].to_pylist())
        pod = features.derive(inputs, features.categories(settings.events.tenants), features.CONTENT_COLUMNS)
        trained = np.column_stack([r[c].to_numpy(zero_copy_only=False) for c in CONTENT])
        assert np.array_equal(pod, trained, equal_nan=True), request
        checked += len(items)
        known += int(np.isfinite(trained).all(axis=1).sum())
    assert checked > 100 and known > 30                          # many rows, and many with both features known


def test_without_an_embeddings_object_the_features_are_nan_and_every_other_column_is_the_golden_one(lake, store):
    settings, _ = lake
    result = dataset.build(settings, end=END, store=store)
    for split in dataset.SPLITS:
        got = read_split(store, settings, END - timedelta(days=1), split)
        assert all(np.isnan(got[c].to_numpy(zero_copy_only=False)).all() for c in CONTENT)
        want = pq.read_table(GOLDEN / f"split-{split}.parquet").drop_columns(CONTENT)
        assert_tables_equal(got.drop_columns(CONTENT), want, split)
    prefix = result.uri.split("/", 3)[3] + "snapshot/"
    users = pq.read_table(io.BytesIO(store.get(settings.s3.lake_bucket, prefix + "user.parquet").body))
    assert users["content_profile"].null_count == users.num_rows
    golden_users = pq.read_table(GOLDEN / "snapshot-user.parquet").drop_columns(["content_profile", "recent_positives"])
    assert_tables_equal(users.drop_columns(["content_profile", "recent_positives"]), golden_users, "user")
