"""The feature snapshot of a model version, read by entity keys: a request's inputs to `features.derive`.

Why: the training set computed every feature from windowed counts "as of the start of a day"; the
version carries the same counts as of the day after its training window (features/*.parquet), so
a pod builds the exact inputs the training rows of that day would have, through the same
`feedloop.features.definitions` code. Unknown keys get zero counts, which `derive` turns into the manifest's
defaults (the smoothed-rate prior). The content-similarity inputs come from the user profiles and item
embeddings in user.parquet and items.parquet, through the training set's own code
(feedloop.features.content_profile.ContentTable); a snapshot without those columns gives NaN.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from feedloop.features import content_profile
from feedloop.features import definitions as features

_UNKNOWN_ITEM = (None, np.nan, None)  # not in the catalog: no topic, unknown age, no author
ITEMS = "items"  # the catalog: item_id -> topic, created_at (and author_id when the catalog has it)
# Every file a snapshot has, named by the feature definitions (never by a manifest or a pointer).
FILES = tuple(f"{e.name}.parquet" for e in features.ENTITIES) + (f"{ITEMS}.parquet",)


class SnapshotError(ValueError):
    """A snapshot file is missing or lacks the columns the feature definitions need."""


@dataclass(frozen=True)
class _Table:
    """Counts of one entity: a key -> row index, and a float64 matrix with a zero row at the end."""

    index: dict
    counts: np.ndarray  # [rows + 1, columns]; row -1 is all zeros (an unknown key)

    def rows(self, keys: Sequence) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))


class Snapshot:
    """Everything a pod needs besides the model to score a request."""

    def __init__(self, entities: Mapping[str, _Table], catalog: Mapping[str, tuple[str | None, float, str | None]],
                 content: tuple[dict[str, int], dict[str, int], content_profile.ContentTable] | None = None):
        self._entities = entities
        self._catalog = catalog
        self._users, self._items, self._content = content or ({}, {}, content_profile.ContentTable.empty())

    @classmethod
    def from_parquet(cls, files: Mapping[str, bytes]) -> Snapshot:
        """files: "<entity>.parquet" (one per features.ENTITIES) and "items.parquet" -> bytes."""
        import pyarrow.parquet as pq

        entities, tables = {}, {}
        for entity in features.ENTITIES:
            table = tables[entity.name] = pq.read_table(io.BytesIO(_file(files, entity.name)))
            missing = [c for c in (*entity.keys, *entity.columns()) if c not in table.column_names]
            if missing:
                raise SnapshotError(f"snapshot {entity.name}.parquet lacks column(s) {', '.join(missing)}")
            keys = [table[k].to_pylist() for k in entity.keys]
            index = {k: i for i, k in enumerate(keys[0] if len(keys) == 1 else zip(*keys))}
            counts = np.zeros((table.num_rows + 1, len(entity.columns())), dtype=np.float64)
            for j, c in enumerate(entity.columns()):
                counts[:-1, j] = table[c].to_numpy(zero_copy_only=False)
            entities[entity.name] = _Table(index, counts)
        items = pq.read_table(io.BytesIO(_file(files, ITEMS)))
        missing = [c for c in ("item_id", "topic", "created_at") if c not in items.column_names]
        if missing:
            raise SnapshotError(f"snapshot {ITEMS}.parquet lacks column(s) {', '.join(missing)}")
        created = _epoch_seconds(items["created_at"])
        authors = items["author_id"].to_pylist() if "author_id" in items.column_names else [None] * items.num_rows
        catalog = {item: (topic, float(c), author) for item, topic, c, author
                   in zip(items["item_id"].to_pylist(), items["topic"].to_pylist(), created, authors)}
        return cls(entities, catalog, content_profile.from_snapshot(tables["user"], items))

    def inputs(self, *, tenant_id: str, user_id: str, surface: str, device: str, request_ts: float,
               item_ids: Sequence[str], author_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
        """The raw inputs of `features.derive` for one request's candidates (authors as from `authors`)."""
        n = len(item_ids)
        meta = [self._catalog.get(i, _UNKNOWN_ITEM) for i in item_ids]
        topics = [m[0] for m in meta]
        authors = author_ids
        keys = {
            "user": [user_id] * n,
            "item": item_ids,
            "author": authors,
            "user_author": [(user_id, a) for a in authors],
            "user_topic": [(user_id, t) for t in topics],
        }
        out: dict[str, np.ndarray] = {}
        for entity in features.ENTITIES:
            table = self._entities[entity.name]
            block = table.counts[table.rows(keys[entity.name])]
            for j, c in enumerate(entity.columns()):
                out[c] = block[:, j]
        user_row = np.full(n, self._users.get(user_id, -1), dtype=np.int64)
        item_rows = np.fromiter((self._items.get(i, -1) for i in item_ids), dtype=np.int64, count=n)
        out.update(self._content.inputs(user_row, item_rows))
        out["request_ts"] = np.full(n, request_ts, dtype=np.float64)
        out["item_created_at"] = np.fromiter((m[1] for m in meta), dtype=np.float64, count=n)
        for name, value in (("tenant_id", tenant_id), ("surface", surface), ("device", device)):
            out[name] = np.full(n, value, dtype=object)
        return out

    def authors(self, item_ids: Sequence[str], author_ids: Sequence[str | None]) -> list[str | None]:
        """The request's author of each item, else the catalog's (None when neither knows it)."""
        return [a if a is not None else self._catalog.get(i, _UNKNOWN_ITEM)[2] for i, a in zip(item_ids, author_ids)]

    def sizes(self) -> dict[str, int]:
        return {**{name: len(t.index) for name, t in self._entities.items()}, ITEMS: len(self._catalog),
                "content_profiles": len(self._users), "item_embeddings": len(self._items)}


def _epoch_seconds(column) -> np.ndarray:
    """Timestamps of any unit (DuckDB writes microseconds, pyarrow often milliseconds) as float seconds."""
    import pyarrow as pa

    micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6


def _file(files: Mapping[str, bytes], name: str) -> bytes:
    try:
        return files[f"{name}.parquet"]
    except KeyError:
        raise SnapshotError(f"the version has no features/{name}.parquet (re-register it with its snapshot)") from None
