"""The catalog's item texts as embeddings in the lake, brought up to date incrementally.

Why incremental: a catalog changes a little a day, and embedding all of it before every retrain would
cost its whole size each time. Every row keeps the sha256 of the text it was made from and the model id,
so a run embeds only the items that are new, whose text changed, or whose row another model made; it
keeps every other row as it was, drops the rows of items gone from the catalog, and writes nothing when
nothing changed (a second run embeds 0 items). The object is replaced by a conditional put (If-Match on
the ETag read, If-None-Match: * for the first), so of two runs at once one loses loudly and changes
nothing (PreconditionFailed; run it again: what the winner embedded is kept).

An item with neither a title nor a description (a catalog written before the simulator had text) gets
no row and is counted in `skipped_no_text`; readers take a missing row as "no content". A catalog that
lists an item_id twice: the first row counts.

Storage contract (s3://<lake>/catalog/items/embeddings.parquet, layout.CATALOG_EMBEDDINGS_KEY), one row per
item, sorted by item_id: item_id string, tenant_id string, model string, text_sha256 string (of the text
below, UTF-8), embedding fixed_size_list<float32>[d] (L2-normalised), embedded_at timestamp(ms, UTC).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.content.embedder import Embedder
from feedloop.core import layout as lake
from feedloop.core.storage import ObjectStore, StoredObject

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["item_id", "tenant_id", "model", "text_sha256"]  # what deciding which items to embed needs


def schema(dim: int) -> pa.Schema:
    return pa.schema([("item_id", pa.string()), ("tenant_id", pa.string()), ("model", pa.string()),
                      ("text_sha256", pa.string()), ("embedding", pa.list_(pa.float32(), dim)),
                      ("embedded_at", pa.timestamp("ms", tz="UTC"))])


@dataclass(frozen=True)
class EmbedResult:
    status: Literal["no-catalog", "unchanged", "written"]
    model: str
    catalog_items: int = 0
    embedded: int = 0          # new items, changed texts, rows of another model
    kept: int = 0              # rows reused as they were
    removed: int = 0           # rows of items no longer in the catalog (or no longer with text)
    skipped_no_text: int = 0
    seconds: float = 0.0
    uri: str = ""


@dataclass(frozen=True)
class _Item:
    tenant_id: str | None
    text: str
    sha: str


def item_text(title: str | None, description: str | None) -> str:
    """What an item is embedded from: its title and description, one per line ("" when it has neither)."""
    return "\n".join(part.strip() for part in (title, description) if part and part.strip())


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def embed_catalog(store: ObjectStore, bucket: str, embedder: Embedder, *, now: datetime | None = None) -> EmbedResult:
    """Embed the catalog's new and changed items and write the embeddings object if anything changed."""
    started = time.perf_counter()
    catalog = store.get(bucket, lake.CATALOG_ITEMS_KEY)
    if catalog is None:
        log.warning("no item catalog at s3://%s/%s: no item embeddings to update", bucket, lake.CATALOG_ITEMS_KEY)
        return EmbedResult("no-catalog", embedder.model_id)
    items, catalog_rows, skipped = _catalog_items(catalog.body)
    previous = store.get(bucket, lake.CATALOG_EMBEDDINGS_KEY)
    old = _stored(previous, embedder.dim, columns=PLAN_COLUMNS)  # the vectors are read only to be rewritten
    keep, todo, replaced = _plan(old, items, embedder.model_id)
    removed = old.num_rows - len(keep) - replaced
    uri = f"s3://{bucket}/{lake.CATALOG_EMBEDDINGS_KEY}"
    counts = dict(model=embedder.model_id, catalog_items=catalog_rows, embedded=len(todo), kept=len(keep),
                  removed=removed, skipped_no_text=skipped, uri=uri)
    if not todo and not removed:
        log.info("item embeddings up to date: %d items, %d without text (%s)", len(keep), skipped, uri)
        return EmbedResult("unchanged", **counts, seconds=round(time.perf_counter() - started, 3))
    vectors = embedder.embed([items[item_id].text for item_id in todo])
    kept = _stored(previous, embedder.dim).take(pa.array(keep, pa.int64()))
    table = _merge(kept, todo, items, vectors, embedder, now or datetime.now(timezone.utc))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    if previous is not None:
        store.put(bucket, lake.CATALOG_EMBEDDINGS_KEY, buf.getvalue(), if_match=previous.etag)
    else:
        store.put(bucket, lake.CATALOG_EMBEDDINGS_KEY, buf.getvalue(), if_none_match=True)
    seconds = round(time.perf_counter() - started, 3)
    log.info("item embeddings: %d embedded, %d kept, %d removed, %d without text in %.1f s (%s)", len(todo),
             len(keep), removed, skipped, seconds, uri)
    return EmbedResult("written", **counts, seconds=seconds)


def load_item_embeddings(store: ObjectStore, bucket: str) -> tuple[list[str], np.ndarray]:
    """(item_ids, float32 [n, d] L2-normalised rows in that order); ([], a (0, 0) array) when none were written."""
    found = store.get(bucket, lake.CATALOG_EMBEDDINGS_KEY)
    if found is None:
        return [], np.zeros((0, 0), dtype=np.float32)
    table = pq.read_table(io.BytesIO(found.body), columns=["item_id", "embedding"])
    return table["item_id"].to_pylist(), _matrix(table["embedding"])


def _stored(found: StoredObject | None, dim: int, *, columns: list[str] | None = None) -> pa.Table:
    """The embeddings object as a table (these columns only), or an empty one of the contract's schema."""
    if found is None:
        return schema(dim).empty_table()
    return pq.read_table(io.BytesIO(found.body), columns=columns)


def _catalog_items(body: bytes) -> tuple[dict[str, _Item], int, int]:
    """item_id -> its text, for the items that have text; the catalog's row count; how many had no text."""
    names = set(pq.read_schema(io.BytesIO(body)).names)
    wanted = [c for c in ("item_id", "tenant_id", "title", "description") if c in names]
    table = pq.read_table(io.BytesIO(body), columns=wanted)
    n = table.num_rows

    def column(name: str) -> list:
        return table[name].to_pylist() if name in names else [None] * n

    items: dict[str, _Item] = {}
    skipped = 0
    for item_id, tenant_id, title, description in zip(column("item_id"), column("tenant_id"), column("title"),
                                                       column("description")):
        text = item_text(title, description)
        if not item_id or not text:
            skipped += 1
        elif item_id not in items:
            items[item_id] = _Item(tenant_id, text, text_sha256(text))
    return items, n, skipped


def _plan(old: pa.Table, items: dict[str, _Item], model: str) -> tuple[list[int], list[str], int]:
    """Rows of `old` to keep as they are, the items to embed (catalog order), and how many of those had a row."""
    rows = {item_id: row for row, item_id in enumerate(old["item_id"].to_pylist())}
    models, shas, tenants = (old[c].to_pylist() for c in ("model", "text_sha256", "tenant_id"))
    keep, todo, replaced = [], [], 0
    for item_id, item in items.items():
        row = rows.get(item_id)
        if row is not None and models[row] == model and shas[row] == item.sha and tenants[row] == item.tenant_id:
            keep.append(row)
        else:
            todo.append(item_id)
            replaced += row is not None
    return keep, todo, replaced


def _merge(kept: pa.Table, todo: list[str], items: dict[str, _Item], vectors: np.ndarray, embedder: Embedder,
           now: datetime) -> pa.Table:
    """The kept rows and the new ones in one table of the contract's schema, sorted by item_id."""
    target = schema(embedder.dim)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    fresh = pa.table({
        "item_id": todo,
        "tenant_id": [items[i].tenant_id for i in todo],
        "model": [embedder.model_id] * len(todo),
        "text_sha256": [items[i].sha for i in todo],
        "embedding": pa.FixedSizeListArray.from_arrays(flat, embedder.dim),
        "embedded_at": pa.array([now] * len(todo), pa.timestamp("ms", tz="UTC")),
    }, schema=target)
    parts = [kept.cast(target), fresh] if kept.num_rows else [fresh]
    return pa.concat_tables(parts).sort_by("item_id")


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    embeddings = column.combine_chunks()
    dim = embeddings.type.list_size
    return embeddings.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
