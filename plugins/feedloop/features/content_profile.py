"""Content-similarity inputs: user profiles from item embeddings, point in time, for training and serving alike.

A user's profile as of the start of day d is the recency-weighted mean of the embeddings of the distinct items
they engaged with positively (definitions.CONTENT.events) in engagements that ARRIVED (ingest_ts) on days
[d - window_days, d): the count features' rule, so an engagement arriving on day d never counts for d. Each item
weighs 2^(-age / half-life), age = start of d minus its latest such arrival. The user's recent positives are the
K items with the latest arrivals (ties by item id).

Where the vectors live: training computes a profile per (user, impression day) of the window (Profiles, numpy),
and the rows look theirs up by index; the build's snapshot "as of D + 1" carries the same computation for
(user, D + 1) as columns of user.parquet (content_profile, recent_positives: item ids) and the embeddings as a
column of items.parquet (embedding). Both sides build a ContentTable from those raw float32 vectors and score
candidates with ContentTable.inputs: the same code on the same numbers, so the same bits.

Embeddings: s3://<lake>/catalog/items/embeddings.parquet (item_id, tenant_id, model, text_sha256, embedding
L2-normalised float32, embedded_at), written by feedloop.content. Only the newest model's vectors are used (the
model of the latest embedded_at; one vector per item, its latest), and only for catalog items. Missing object:
no profile and no item vector, so both features take their declared default (NaN).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa

from feedloop.core import duck, layout
from feedloop.core.storage import ObjectStore
from feedloop.features import definitions as features

log = logging.getLogger(__name__)

CHUNK_VALUES = 1 << 22     # values per gathered block (scoring rows, summing profiles): bounded memory


def similarities(profile: np.ndarray, item: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine of profile and item, max cosine of item and the recent positives), NaN where a side is unknown.

    Unit vectors (`unit`): profile, item [n, dim]; recent [n, K, dim]; NaN rows stand for unknown vectors (padding
    included). float32 and einsum without BLAS: each row's sums run in the same order whatever the batch, so a
    pod's request and the training set's block give the same bits (tested); float64 cost 40 s per 1M rows at 384-d."""
    cos = np.einsum("nd,nd->n", profile, item)
    pairs = np.einsum("nkd,nd->nk", recent, item)
    best = np.max(np.where(np.isnan(pairs), -np.inf, pairs), axis=-1, initial=-np.inf)
    return cos, np.where(np.isinf(best), np.nan, best)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); zero or NaN rows NaN. Both sides normalise the snapshot's raw vectors."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.sqrt(np.einsum("nd,nd->n", v, v))
    out = v / np.where(norm > 0, norm, np.nan)[:, None]
    return out


@dataclass(frozen=True)
class ContentTable:
    """Unit profiles and recent positives per profile row, and unit item embeddings; each last row is the unknown."""

    profiles: np.ndarray     # float32 [profiles + 1, dim], last row NaN
    recent: np.ndarray       # int64 [profiles + 1, K]: rows of `embeddings`, padded with its last (NaN) row
    embeddings: np.ndarray   # float32 [items + 1, dim], last row NaN

    @classmethod
    def of(cls, profiles: np.ndarray, recent: np.ndarray, embeddings: np.ndarray) -> ContentTable:
        """From raw vectors (the snapshot's, or what the build writes into it), normalised alike on both sides."""
        return cls(unit(profiles), recent, unit(embeddings))

    @classmethod
    def empty(cls) -> ContentTable:
        return cls(np.full((1, 1), np.nan, np.float32), np.zeros((1, 0), np.int64), np.full((1, 1), np.nan, np.float32))

    def inputs(self, profile_rows: np.ndarray, item_rows: np.ndarray) -> dict[str, np.ndarray]:
        """features.CONTENT_COLUMNS for rows given as profile and item rows (-1: unknown), in bounded blocks."""
        p = np.where(profile_rows < 0, len(self.profiles) - 1, profile_rows)
        i = np.where(item_rows < 0, len(self.embeddings) - 1, item_rows)
        n, width = len(p), self.embeddings.shape[1] * (self.recent.shape[1] + 2)
        cos, best = np.empty(n, np.float32), np.empty(n, np.float32)
        step = max(1, CHUNK_VALUES // width)
        for a in range(0, n, step):
            b = min(n, a + step)
            cos[a:b], best[a:b] = similarities(self.profiles[p[a:b]], self.embeddings[i[a:b]],
                                               self.embeddings[self.recent[p[a:b]]])
        return dict(zip(features.CONTENT_COLUMNS, (cos, best)))


@dataclass(frozen=True)
class Profiles:
    """The build's profiles: the raw vectors the snapshot carries, and the table the rows are scored with."""

    profiles: np.ndarray     # float32 [pairs + 1, dim] recency-weighted means, last row NaN
    recent: np.ndarray       # int64 [pairs + 1, K]
    embeddings: np.ndarray   # float32 [items + 1, dim] as read, last row NaN
    table: ContentTable


# ---- reading the embeddings ----------------------------------------------------------------------------------

def item_embeddings(store: ObjectStore, bucket: str, catalog_ids: set[str]) -> tuple[list[str], np.ndarray]:
    """(item ids sorted, float32 [items, dim]) of the newest embedding model, for catalog items; empty if none."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found = store.get(bucket, layout.CATALOG_EMBEDDINGS_KEY)
    if found is None:
        log.warning("no item embeddings at s3://%s/%s: the content-similarity features are NaN", bucket,
                    layout.CATALOG_EMBEDDINGS_KEY)
        return [], np.zeros((0, 1), np.float32)
    table = pq.read_table(io.BytesIO(found.body), columns=["item_id", "model", "embedding", "embedded_at"])
    if table.num_rows == 0:
        return [], np.zeros((0, 1), np.float32)
    newest = table.filter(pc.equal(table["embedded_at"], pc.max(table["embedded_at"])))
    model = sorted(set(newest["model"].to_pylist()))[-1]
    # Row indices first, from the small columns: sorting the table would move every vector.
    small = pa.table({"item_id": table["item_id"], "embedded_at": table["embedded_at"],
                      "row": pa.array(np.arange(table.num_rows), pa.int64())})
    small = small.filter(pc.and_(pc.equal(table["model"], model),
                                 pc.is_in(table["item_id"], value_set=pa.array(sorted(catalog_ids), pa.string()))))
    small = small.sort_by([("item_id", "ascending"), ("embedded_at", "ascending")])
    items = np.asarray(small["item_id"].to_pylist(), dtype=object)
    last = np.flatnonzero(np.r_[items[1:] != items[:-1], True]) if len(items) else np.zeros(0, np.int64)
    ids = items[last].tolist()
    vectors = _matrix(table["embedding"])[small["row"].to_numpy()[last]]
    log.info("item embeddings: %d catalog items, model %s, dimension %d", len(ids), model, vectors.shape[1])
    return ids, vectors


def _matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of equal-length float vectors as float32 [rows, dim]; null rows NaN."""
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, 1), np.float32)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    dim = int(lengths.max()) or 1
    if np.any((lengths != dim) & (lengths != 0)):
        raise ValueError(f"embeddings of different lengths ({sorted(set(lengths.tolist()))}): one model's vectors only")
    valid = lengths == dim
    flat = pc.list_flatten(arr if valid.all() else arr.filter(pa.array(valid)))
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    if valid.all():
        return values
    out = np.full((len(arr), dim), np.nan, np.float32)
    out[valid] = values
    return out


# ---- training: the build's tables ----------------------------------------------------------------------------

def stage_items(con, store: ObjectStore, bucket: str) -> np.ndarray:
    """Table citem (item_id, item_row) in the connection; the embeddings [items + 1, dim] (last row NaN)."""
    catalog = {r[0] for r in con.execute("SELECT item_id FROM catalog").fetchall()}
    ids, vectors = item_embeddings(store, bucket, catalog)
    con.register("citem_ids", pa.table({"item_id": pa.array(ids, pa.string()),
                                        "item_row": pa.array(np.arange(len(ids)), pa.int64())}))
    con.execute("CREATE TABLE citem AS SELECT * FROM citem_ids")
    con.unregister("citem_ids")
    return np.vstack([vectors, np.full((1, vectors.shape[1]), np.nan, np.float32)])


def stage_positives(con, end_ts: datetime) -> None:
    """Table cpos: per user, positive item and arrival day, the latest arrival (read before `ev` is dropped)."""
    kinds = ", ".join(f"'{k}'" for k in features.CONTENT.events)
    con.execute(f"""
        CREATE TABLE cpos AS
        SELECT e.user_id, c.item_row, {duck.utc_day('e.ingest_ts')} AS d, epoch(max(e.ingest_ts)) AS arrived
        FROM ev e JOIN citem c USING (item_id)
        WHERE e.event_type IN ({kinds}) AND e.ingest_ts < ? AND e.user_id IS NOT NULL
        GROUP BY ALL""", [end_ts])


def profiles(con, embeddings: np.ndarray, as_of: date) -> Profiles:
    """Table cpair (user_id, d, pair_row): a profile row per (user, impression day) and per (user, as_of) for the
    snapshot; and the profiles. Needs imp and cpos."""
    spec = features.CONTENT
    con.execute(f"""
        CREATE TABLE cpair AS
        SELECT user_id, d, (row_number() OVER (ORDER BY user_id, d) - 1)::BIGINT AS pair_row
        FROM (SELECT DISTINCT user_id, d FROM imp SEMI JOIN cpos USING (user_id)
              UNION SELECT DISTINCT user_id, DATE '{as_of.isoformat()}' FROM cpos
                    WHERE d >= DATE '{as_of.isoformat()}' - {spec.window_days})""")
    pairs = con.execute("SELECT count(*) FROM cpair").fetchone()[0]
    joined = con.execute(f"""
        SELECT p.pair_row, x.item_row, epoch(p.d::TIMESTAMP) - max(x.arrived) AS age
        FROM cpair p JOIN cpos x ON x.user_id = p.user_id AND x.d < p.d AND x.d >= p.d - {spec.window_days}
        GROUP BY p.pair_row, p.d, x.item_row
        ORDER BY p.pair_row, age, x.item_row""").fetchnumpy()
    return from_positives(pairs, joined["pair_row"], joined["item_row"], joined["age"], embeddings)


def from_positives(pairs: int, pair_row: np.ndarray, item_row: np.ndarray, age_s: np.ndarray,
                   embeddings: np.ndarray) -> Profiles:
    """`pairs` profile rows from their positives, sorted by (pair_row, age, item_row)."""
    spec, dim = features.CONTENT, embeddings.shape[1]
    prof = np.full((pairs + 1, dim), np.nan, np.float32)
    recent = np.full((pairs + 1, spec.recent_k), len(embeddings) - 1, np.int64)
    if len(pair_row):
        pair_row, item_row = np.asarray(pair_row, np.int64), np.asarray(item_row, np.int64)
        starts = np.flatnonzero(np.r_[True, pair_row[1:] != pair_row[:-1]])
        weight = np.exp2(-np.asarray(age_s, np.float64) / (spec.half_life_days * 86_400.0))
        a = 0
        while a < len(starts):   # whole profiles at a time, about CHUNK_VALUES gathered values each
            b = max(a + 1, int(np.searchsorted(starts, starts[a] + CHUNK_VALUES // dim, side="right")))
            lo, hi = starts[a], starts[b] if b < len(starts) else len(pair_row)
            local = starts[a:b] - lo
            sums = np.add.reduceat(weight[lo:hi, None] * embeddings[item_row[lo:hi]].astype(np.float64), local, axis=0)
            prof[pair_row[starts[a:b]]] = sums / np.add.reduceat(weight[lo:hi], local)[:, None]
            a = b
        rank = np.arange(len(pair_row)) - np.repeat(starts, np.diff(np.r_[starts, len(pair_row)]))
        keep = rank < spec.recent_k
        recent[pair_row[keep], rank[keep]] = item_row[keep]
    return Profiles(prof, recent, embeddings, ContentTable.of(prof, recent, embeddings))


def snapshot_tables(con, built: Profiles, as_of: date) -> None:
    """Register cuser (user_id, content_profile, recent_positives): the profiles as of `as_of`, for user.parquet."""
    rows = con.execute(f"SELECT user_id, pair_row FROM cpair WHERE d = DATE '{as_of.isoformat()}' "
                       "ORDER BY user_id").fetchnumpy()
    prof = built.profiles[rows["pair_row"]]
    known = ~np.isnan(prof).any(axis=1)
    ids, recent = _item_ids(con), built.recent[rows["pair_row"][known]]
    con.register("cuser", pa.table({
        "user_id": pa.array(np.asarray(rows["user_id"], dtype=object)[known], pa.string()),
        "content_profile": _lists(prof[known]),
        "recent_positives": pa.array([[i for i in ids[r] if i is not None] for r in recent], pa.list_(pa.string()))}))


def write_items(con, built: Profiles, path: str) -> None:
    """items.parquet: the catalog's columns and each item's embedding as read (null without one).

    Written with pyarrow: DuckDB's COPY of a list column took 5.9 CPU-s for 200k 384-d vectors, pyarrow 2.0
    (measured 2026-12-05 under load)."""
    import pyarrow.parquet as pq

    items = con.execute("SELECT item_id, topic, created_at, catalog_author_id AS author_id FROM catalog "
                        "ORDER BY item_id").fetch_arrow_table()
    row = {item: k for k, item in enumerate(_item_ids(con)[:-1])}
    rows = np.fromiter((row.get(i, -1) for i in items["item_id"].to_pylist()), np.int64, count=items.num_rows)
    vectors = built.embeddings[np.where(rows < 0, len(built.embeddings) - 1, rows)]
    embedding = _lists(vectors)
    pq.write_table(items.append_column("embedding", pa.ListArray.from_arrays(
        embedding.offsets, embedding.values, mask=pa.array(rows < 0))), path)


def _item_ids(con) -> np.ndarray:
    """citem's item ids by item_row, and None for the unknown (last) row."""
    ids = con.execute("SELECT item_id FROM citem ORDER BY item_row").fetchnumpy()["item_id"]
    return np.append(np.asarray(ids, dtype=object), None)


def _lists(matrix: np.ndarray) -> pa.ListArray:
    flat = pa.array(np.ascontiguousarray(matrix, np.float32).ravel(), pa.float32())
    return pa.ListArray.from_arrays(pa.array(np.arange(len(matrix) + 1) * matrix.shape[1], pa.int32()), flat)


# ---- serving: the snapshot's columns -------------------------------------------------------------------------

def from_snapshot(users: pa.Table, items: pa.Table) -> tuple[pa.Array, pa.Array, ContentTable]:
    """(user id of each profile row, item id of each embedding row, table) from user.parquet and items.parquet.

    Vectorised (no Python object per user or item): a pod builds this while it serves, and Python loops here
    held the GIL that its requests need. A snapshot without the columns (one registered before these
    features) gives an empty table: NaN features."""
    import pyarrow.compute as pc

    if "content_profile" not in users.column_names or "embedding" not in items.column_names:
        return pa.array([], pa.string()), pa.array([], pa.string()), ContentTable.empty()
    embeddings = _matrix(items["embedding"])
    has = ~np.isnan(embeddings).any(axis=1)
    item_ids = items["item_id"].combine_chunks().filter(pa.array(has))
    embeddings = np.vstack([embeddings[has], np.full((1, embeddings.shape[1]), np.nan, np.float32)])
    prof = _matrix(users["content_profile"])
    known = ~np.isnan(prof).any(axis=1)
    lists = users["recent_positives"].combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    k = max(features.CONTENT.recent_k, int(lengths.max(initial=0)))
    lists = lists.filter(pa.array(known))
    row_of = pc.fill_null(pc.index_in(pc.list_flatten(lists), value_set=item_ids), -1).to_numpy().astype(np.int64)
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    kept = row_of >= 0
    parent, row_of = parent[kept], row_of[kept]
    slot = np.arange(len(parent)) - np.searchsorted(parent, parent, side="left")
    recent = np.full((int(known.sum()) + 1, k), len(embeddings) - 1, np.int64)
    recent[parent, slot] = row_of
    profiles = np.vstack([prof[known], np.full((1, prof.shape[1]), np.nan, np.float32)])
    user_ids = users["user_id"].combine_chunks().filter(pa.array(known))
    return user_ids, item_ids, ContentTable.of(profiles, recent, embeddings)
