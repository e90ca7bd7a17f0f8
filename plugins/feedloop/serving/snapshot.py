"""The feature snapshot of a model version, read by entity keys: a request's inputs to `features.derive`.

Why: the training set computed every feature from windowed counts "as of the start of a day"; the
version carries the same counts as of the day after its training window (features/*.parquet), so
a pod builds the exact inputs the training rows of that day would have, through the same
`feedloop.features.definitions` code. Unknown keys get zero counts, which `derive` turns into the manifest's
defaults (the smoothed-rate prior). The content-similarity inputs come from the user profiles and item
embeddings in user.parquet and items.parquet, through the training set's own code
(feedloop.features.content_profile.ContentTable); a snapshot without those columns gives NaN.
Keys are vocabulary codes (feedloop.core.vocabulary), never a Python object per key: a pod builds this
while it serves, and dicts of ~10^6 keys held the GIL its requests need, while loading and at every
garbage collection after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from feedloop.core.vocabulary import UNKNOWN, Vocabulary
from feedloop.features import content_profile
from feedloop.features import definitions as features

ITEMS = "items"  # the catalog: item_id -> topic, created_at (and author_id when the catalog has it)
# Every file a snapshot has, named by the feature definitions (never by a manifest or a pointer).
FILES = tuple(f"{e.name}.parquet" for e in features.ENTITIES) + (f"{ITEMS}.parquet",)
# The vocabulary each key column draws its codes from.
_KINDS = {"user_id": "user", "item_id": "item", "author_id": "author", "topic": "topic"}


class SnapshotError(ValueError):
    """A snapshot file is missing or lacks the columns the feature definitions need."""


@dataclass(frozen=True)
class _Counts:
    """One entity's counts by key codes: float64 [rows + 1, columns] whose last row is all zeros (unknown).

    One key: row = the key's code (dense over its vocabulary). Two keys: rows sorted by a combined int64
    code (first * radix + second), found by bisection."""

    counts: np.ndarray
    size: int                          # keys with counts
    pairs: np.ndarray | None = None
    radix: int = 0

    def pair_rows(self, first: int, seconds: np.ndarray) -> np.ndarray:
        if first == UNKNOWN or self.pairs is None or not len(self.pairs):
            return np.full(len(seconds), UNKNOWN, np.int64)
        wanted = first * self.radix + seconds
        pos = np.searchsorted(self.pairs, wanted)
        hit = (self.pairs[np.minimum(pos, len(self.pairs) - 1)] == wanted) & (seconds != UNKNOWN)
        return np.where(hit, pos, UNKNOWN)


@dataclass(frozen=True)
class _Catalog:
    """Per item code (last entry: unknown item): topic code, created_at (epoch s, NaN unknown) and author (its id
    and its author code)."""

    topic: np.ndarray          # int64
    created: np.ndarray        # float64
    author: np.ndarray         # object: the author id, or None
    author_code: np.ndarray    # int64: the author's code (UNKNOWN: none)
    size: int                  # items listed


class Snapshot:
    """Everything a pod needs besides the model to score a request, keyed by vocabulary codes."""

    def __init__(self, vocab: Mapping[str, Vocabulary], entities: Mapping[str, _Counts], catalog: _Catalog,
                 content_rows: tuple[np.ndarray, np.ndarray], content: content_profile.ContentTable):
        self._vocab, self._entities, self._catalog = vocab, entities, catalog
        self._profile_row, self._embedding_row = content_rows
        self._content = content

    @classmethod
    def from_parquet(cls, files: Mapping[str, bytes]) -> Snapshot:
        """files: "<entity>.parquet" (one per features.ENTITIES) and "items.parquet" -> bytes."""
        import pyarrow.parquet as pq

        # Read from Arrow's own buffer reader: through io.BytesIO every read called back into Python under the GIL
        # (a pod reads these beside its requests: up to 5 ms at a time, measured)
        tables = {}
        for entity in features.ENTITIES:
            table = tables[entity.name] = pq.read_table(pa.BufferReader(_file(files, entity.name)), use_threads=False)
            missing = [c for c in (*entity.keys, *entity.columns()) if c not in table.column_names]
            if missing:
                raise SnapshotError(f"snapshot {entity.name}.parquet lacks column(s) {', '.join(missing)}")
        items = pq.read_table(pa.BufferReader(_file(files, ITEMS)), use_threads=False)
        missing = [c for c in ("item_id", "topic", "created_at") if c not in items.column_names]
        if missing:
            raise SnapshotError(f"snapshot {ITEMS}.parquet lacks column(s) {', '.join(missing)}")
        authors = items["author_id"] if "author_id" in items.column_names else pa.nulls(items.num_rows, pa.string())
        profile_users, embedded_items, content = content_profile.from_snapshot(tables["user"], items)
        columns: dict[str, list] = {kind: [] for kind in _KINDS.values()}
        for entity in features.ENTITIES:
            for key in entity.keys:
                columns[_KINDS[key]].append(tables[entity.name][key])
        columns["item"] += [items["item_id"], embedded_items]
        columns["topic"].append(items["topic"])
        columns["author"].append(authors)
        columns["user"].append(profile_users)
        vocab = {kind: Vocabulary.of(*cols) for kind, cols in columns.items()}
        for kind in ("user", "item", "author"):     # what requests look up: indexed here, in the loader's thread
            vocab[kind].build_index()
        entities = {e.name: _counts(tables[e.name], e, vocab) for e in features.ENTITIES}
        catalog = _catalog(vocab, items["item_id"], items["topic"], _epoch_seconds(items["created_at"]), authors)
        rows = (_rows_by_code(vocab["user"].codes(profile_users), len(vocab["user"])),
                _rows_by_code(vocab["item"].codes(embedded_items), len(vocab["item"])))
        return cls(vocab, entities, catalog, rows, content)

    def inputs(self, *, tenant_id: str, user_id: str, surface: str, device: str, request_ts: float,
               item_ids: Sequence[str], author_ids: Sequence[str | None]) -> dict[str, np.ndarray]:
        """The raw inputs of `features.derive` for one request's candidates (authors as from `authors`)."""
        return self._inputs(tenant_id=tenant_id, user_id=user_id, surface=surface, device=device,
                            request_ts=request_ts, items=self._vocab["item"].lookup(item_ids),
                            authors=self._vocab["author"].lookup(author_ids))

    def authors(self, item_ids: Sequence[str], author_ids: Sequence[str | None]) -> list[str | None]:
        """The request's author of each item, else the catalog's (None when neither knows it)."""
        return _either(author_ids, self._catalog.author[self._vocab["item"].lookup(item_ids)].tolist())

    def request(self, *, tenant_id: str, user_id: str, surface: str, device: str, request_ts: float,
                item_ids: Sequence[str],
                author_ids: Sequence[str | None]) -> tuple[list[str | None], dict[str, np.ndarray]]:
        """`authors` and then `inputs` for one request, as a pod needs them: its items looked up once, and only
        the authors the request names (the catalog's come with their codes)."""
        items = self._vocab["item"].lookup(item_ids)
        catalog = self._catalog.author[items].tolist()
        codes = self._catalog.author_code[items]
        named = [i for i, a in enumerate(author_ids) if a is not None]
        if named:
            codes[named] = self._vocab["author"].lookup([author_ids[i] for i in named])
            catalog = _either(author_ids, catalog)
        return catalog, self._inputs(tenant_id=tenant_id, user_id=user_id, surface=surface, device=device,
                                     request_ts=request_ts, items=items, authors=codes)

    def _inputs(self, *, tenant_id: str, user_id: str, surface: str, device: str, request_ts: float,
                items: np.ndarray, authors: np.ndarray) -> dict[str, np.ndarray]:
        n = len(items)
        user = int(self._vocab["user"].lookup([user_id])[0])
        topics = self._catalog.topic[items]
        user_counts = self._entities["user"].counts[user]
        blocks = {
            "user": np.broadcast_to(user_counts, (n, len(user_counts))),     # one user: its row, not n copies
            "item": self._entities["item"].counts[items],
            "author": self._entities["author"].counts[authors],
            "user_author": self._entities["user_author"].counts[self._entities["user_author"].pair_rows(user, authors)],
            "user_topic": self._entities["user_topic"].counts[self._entities["user_topic"].pair_rows(user, topics)],
        }
        out: dict[str, np.ndarray] = {}
        for entity in features.ENTITIES:
            for j, c in enumerate(entity.columns()):
                out[c] = blocks[entity.name][:, j]
        out.update(self._content.inputs(np.full(n, self._profile_row[user], np.int64), self._embedding_row[items]))
        out["request_ts"] = np.full(n, request_ts, dtype=np.float64)
        out["item_created_at"] = self._catalog.created[items]
        for name, value in (("tenant_id", tenant_id), ("surface", surface), ("device", device)):
            out[name] = np.broadcast_to(np.array(value, dtype=object), (n,))   # one value: features.encode's fast path
        return out

    def sizes(self) -> dict[str, int]:
        return {**{name: t.size for name, t in self._entities.items()}, ITEMS: self._catalog.size,
                "content_profiles": int((self._profile_row >= 0).sum()),
                "item_embeddings": int((self._embedding_row >= 0).sum())}


def _counts(table: pa.Table, entity: features.Entity, vocab: Mapping[str, Vocabulary]) -> _Counts:
    """An entity's counts indexed by its keys' codes (rows with a null key are never found, as before)."""
    values = np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(np.float64)
                              for c in entity.columns()]) if table.num_rows else np.zeros((0, len(entity.columns())))
    codes = [vocab[_KINDS[k]].codes(table[k]) for k in entity.keys]
    if len(codes) == 1:
        dense = np.zeros((len(vocab[_KINDS[entity.keys[0]]]) + 1, values.shape[1]))
        last = _last_rows(codes[0])
        dense[codes[0][last]] = values[last]
        return _Counts(dense, len(last))
    radix = len(vocab[_KINDS[entity.keys[1]]]) + 1
    known = (codes[0] != UNKNOWN) & (codes[1] != UNKNOWN)
    combined = codes[0][known] * radix + codes[1][known]
    order = np.argsort(combined, kind="stable")
    counts = np.vstack([values[known][order], np.zeros((1, values.shape[1]))])
    return _Counts(counts, len(order), combined[order], radix)


def _catalog(vocab: Mapping[str, Vocabulary], item_ids, topics, created: np.ndarray, authors) -> _Catalog:
    """Dense per item code."""
    size = len(vocab["item"]) + 1
    codes = vocab["item"].codes(item_ids)
    topic, when, author = np.full(size, UNKNOWN, np.int64), np.full(size, np.nan), np.full(size, None, object)
    author_code = np.full(size, UNKNOWN, np.int64)
    last = _last_rows(codes)
    topic[codes[last]] = vocab["topic"].codes(topics)[last]
    when[codes[last]] = created[last]
    author[codes[last]] = np.asarray(authors.to_numpy(zero_copy_only=False), dtype=object)[last]
    author_code[codes[last]] = vocab["author"].codes(authors)[last]
    return _Catalog(topic, when, author, author_code, len(last))


def _either(named: Sequence[str | None], catalog: list[str | None]) -> list[str | None]:
    """The request's author where it names one, else the catalog's."""
    return [a if a is not None else c for a, c in zip(named, catalog)]


def _rows_by_code(codes: np.ndarray, size: int) -> np.ndarray:
    """Row r of a table whose r-th id has code codes[r], by code; UNKNOWN elsewhere and at the end."""
    rows = np.full(size + 1, UNKNOWN, np.int64)
    last = _last_rows(codes)
    rows[codes[last]] = last
    return rows


def _last_rows(codes: np.ndarray) -> np.ndarray:
    """The row of each known code's last occurrence: an id listed twice keeps its last row, as a dict did
    (numpy's own assignment does not promise which of repeated indices wins)."""
    last = len(codes) - 1 - np.unique(codes[::-1], return_index=True)[1]
    return last[codes[last] != UNKNOWN]


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
