"""The item side's inputs: the catalog (tenant, topic, author, creation time) and the content embeddings.

Why the embeddings are optional: they come from another stage (catalog/items/embeddings.parquet, written when
item text is embedded). Without them the item tower still has the item's id, topic and author; with them a
new item with no engagement yet is placed by what it says, which is what reaches cold items.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.core import layout as lake
from feedloop.core.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    """Every item in catalog order, with its content vector (zeros where none; width 0 with no embeddings)."""

    item_ids: np.ndarray      # [I] str
    tenant_ids: np.ndarray    # [I] str
    topics: np.ndarray        # [I] str ("" unknown)
    authors: np.ndarray       # [I] str ("" unknown)
    created_s: np.ndarray     # [I] float, epoch seconds (NaN unknown)
    content: np.ndarray       # [I, C] float32, L2-normalised rows or zeros

    @property
    def content_dim(self) -> int:
        return int(self.content.shape[1])

    def existing(self, as_of_s: float) -> Catalog:
        """The items created before `as_of_s` (unknown creation time: kept)."""
        keep = ~(self.created_s >= as_of_s)
        return Catalog(*(getattr(self, f)[keep] for f in ("item_ids", "tenant_ids", "topics", "authors",
                                                         "created_s", "content")))


def from_tables(items: pa.Table, embeddings: pa.Table | None = None) -> Catalog:
    """The catalog from its Parquet tables (item_id, tenant_id, topic, author_id, created_at [+ embeddings])."""
    item_ids = np.array(items["item_id"].to_pylist(), dtype=object)
    names = set(items.column_names)

    def strings(column: str) -> np.ndarray:
        values = items[column].to_pylist() if column in names else [None] * len(item_ids)
        return np.array(["" if v is None else str(v) for v in values], dtype=object)

    created = (items["created_at"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(
        zero_copy_only=False).astype(np.float64) / 1000 if "created_at" in names else np.full(len(item_ids), np.nan))
    return Catalog(item_ids, strings("tenant_id"), strings("topic"), strings("author_id"), created,
                   _content(item_ids, embeddings))


def load(store: ObjectStore, bucket: str) -> Catalog:
    """The lake's catalog and, if present, its content embeddings."""
    items = store.get(bucket, lake.CATALOG_ITEMS_KEY)
    if items is None:
        raise FileNotFoundError(f"no item catalog at s3://{bucket}/{lake.CATALOG_ITEMS_KEY}: retrieval indexes "
                                "the catalog's items and cannot run without it")
    embedded = store.get(bucket, lake.CATALOG_EMBEDDINGS_KEY)
    if embedded is None:
        log.warning("no content embeddings at s3://%s/%s: the item tower uses id, topic and author only", bucket,
                    lake.CATALOG_EMBEDDINGS_KEY)
    return from_tables(pq.read_table(io.BytesIO(items.body)),
                       pq.read_table(io.BytesIO(embedded.body)) if embedded else None)


def _content(item_ids: np.ndarray, embeddings: pa.Table | None) -> np.ndarray:
    """Rows aligned with item_ids; an item with no embedding gets zeros (its tower input carries no content)."""
    if embeddings is None or embeddings.num_rows == 0:
        return np.zeros((len(item_ids), 0), dtype=np.float32)
    column = embeddings["embedding"].combine_chunks()
    width = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    row = {item: k for k, item in enumerate(embeddings["item_id"].to_pylist())}
    out = np.zeros((len(item_ids), width), dtype=np.float32)
    found = np.array([row.get(i, -1) for i in item_ids])
    out[found >= 0] = vectors[found[found >= 0]]
    return out
