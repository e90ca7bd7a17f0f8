"""The retriever's lake reads against the real embedded S3: a window's positives and impressions, the catalog."""

from __future__ import annotations

import io
import uuid
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.contract.lake import LAKE_SCHEMA
from feedloop.core import layout
from feedloop.retrieval import examples, items

pytestmark = pytest.mark.integration


def _event(n: int, kind: str, user: str, item: str, at: datetime, arrived: datetime) -> dict:
    return {"event_id": f"e{n}", "event_ts": at, "tenant_id": "acme", "user_id": user, "item_id": item,
            "author_id": "a1", "request_id": f"r{n}", "surface": "feed", "position": 1, "event_type": kind,
            "dwell_ms": None, "device": "web", "query": None, "schema_version": 1, "explore": False,
            "model_version": None, "kafka_topic": "engagement", "kafka_partition": 0, "kafka_offset": n,
            "ingest_ts": arrived}


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def test_a_window_is_read_from_the_event_day_folders_as_it_had_arrived(store, embedded):
    bucket = f"retrieval-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={"s3": embedded.s3.model_copy(update={"lake_bucket": bucket})})
    day = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    rows = [_event(0, "impression", "u1", "i1", day, day), _event(1, "click", "u1", "i1", day, day),
            _event(2, "click", "u2", "i2", day.replace(hour=23), day.replace(day=3, hour=1))]  # arrives late
    hour = layout.HourPartition.of(day)
    store.put(bucket, layout.events_key(hour, "engagement", 0, 0), _parquet(pa.Table.from_pylist(rows, LAKE_SCHEMA)))

    positives, shown = examples.lake_window(settings, store, start=date(2026, 11, 1), end=date(2026, 11, 3))

    assert [(r["user_id"], r["item_id"], r["d"]) for r in positives.to_pylist()] == [("u1", "i1", date(2026, 11, 2))]
    assert shown.to_pylist() == [{"item_id": "i1", "impressions": 1}]


def test_the_catalog_is_read_with_its_content_embeddings_when_present(store):
    bucket = f"retrieval-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    created = pa.array([datetime(2026, 11, 1, tzinfo=timezone.utc)] * 2, pa.timestamp("ms", tz="UTC"))
    store.put(bucket, layout.CATALOG_ITEMS_KEY, _parquet(pa.table({
        "item_id": ["i1", "i2"], "author_id": ["a1", "a2"], "tenant_id": ["acme", "acme"], "topic": ["t1", "t2"],
        "created_at": created})))
    assert items.load(store, bucket).content_dim == 0

    vectors = pa.FixedSizeListArray.from_arrays(pa.array([0.6, 0.8], pa.float32()), 2)
    store.put(bucket, layout.CATALOG_EMBEDDINGS_KEY, _parquet(pa.table({
        "item_id": ["i2"], "tenant_id": ["acme"], "model": ["m"], "text_sha256": ["x"], "embedding": vectors})))
    catalog = items.load(store, bucket)

    assert catalog.content.tolist() == [[0.0, 0.0], [pytest.approx(0.6), pytest.approx(0.8)]]
    assert np.allclose(catalog.created_s, datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())
