"""Ids as codes: a sorted vocabulary of fixed-width UTF-8 bytes, built and searched by numpy and pyarrow.

Why not a dict: a feature snapshot has 10^5-10^6 keys, and as dicts of str and tuple keys they were
millions of Python objects. Building them held the GIL in long C calls and every full garbage collection
walked them (40-90 ms with the GIL held), so a pod's requests stalled while it loaded a new model
(bench/serve.py, p99 during swaps). Here a vocabulary is one bytes array, built from the Parquet column's
own buffers and searched by bisection, and the tables keyed by it are numpy arrays indexed by code. A request's
few hundred ids are found through a sorted array of the ids' Python hashes instead (`index`, `lookup`): encoding
and bisecting them as bytes cost a pod more per request than all its other feature work.

Every key is its UTF-8 bytes plus a 0x01 end byte, so numpy's NUL padding cannot make two ids equal ("a"
and "a\\0"). Keys longer than LONG_KEY bytes would make the array as wide as the longest one (a producer's
1 MB id times 10^5 keys): they get codes after the array's and live in a small dict.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

END = b"\x01"
LONG_KEY = 256                 # bytes with the end byte; longer keys go to the dict
UNKNOWN = -1                   # the code of an id the vocabulary does not hold (and of a null)
INDEX_SLICE = 8_192            # ids hashed per slice when a vocabulary's lookup index is built
ENCODE_SLICE = 8_192           # ids copied per slice into the fixed-width array (one call over 10^5 held the GIL 11 ms)
_hash = hash                   # Python's str hash: per process, which is all an in-memory index needs


@dataclass(frozen=True)
class HashIndex:
    """Rows of `Vocabulary.distinct` ordered by their ids' Python hashes."""

    hashes: np.ndarray         # int64, ascending
    rows: np.ndarray           # int64: the row of distinct each hash belongs to
    collides: bool             # two ids share a hash (lookups then also try the neighbours)


@dataclass(frozen=True)
class Vocabulary:
    """Distinct non-null ids; code = position in `ordered`, or len(ordered) + j for the j-th long id."""

    ordered: np.ndarray        # S<width>: the encoded short ids, ascending
    long: dict[bytes, int]     # encoded long id -> code
    distinct: pa.Array         # the ids, in pyarrow's order (hashed by `codes`)
    code_of: np.ndarray        # int64: code of distinct[i]

    @classmethod
    def of(cls, *columns: pa.Array | pa.ChunkedArray) -> Vocabulary:
        """The distinct non-null strings of all `columns`."""
        values = pa.chunked_array([c for col in columns for c in _chunks(col)], pa.large_string())
        distinct = pc.unique(values).drop_null()
        fixed, long_rows = _encode(distinct)
        short = np.flatnonzero(~long_rows)
        order = short[np.argsort(fixed[short], kind="stable")]
        long_rows = np.flatnonzero(long_rows)
        code_of = np.empty(len(distinct), np.int64)
        code_of[order] = np.arange(len(order))
        code_of[long_rows] = len(order) + np.arange(len(long_rows))
        long = {distinct[int(r)].as_py().encode("utf-8") + END: int(code_of[r]) for r in long_rows}
        return cls(fixed[order], long, distinct, code_of)

    def __len__(self) -> int:
        return len(self.ordered) + len(self.long)

    @property
    def nbytes(self) -> int:
        return self.ordered.nbytes + self.distinct.nbytes + self.code_of.nbytes

    def ids(self) -> pa.Array:
        """The ids indexed by code (what a code table written back out as ids needs)."""
        by_code = np.empty(len(self.code_of), np.int64)
        by_code[self.code_of] = np.arange(len(self.code_of))
        return self.distinct.take(pa.array(by_code)).cast(pa.string())

    def codes(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Codes of a column's values (UNKNOWN for nulls and for ids not in the vocabulary).

        pyarrow's index_in hashes the whole vocabulary on every call: a column shorter than the vocabulary (a
        training set's batch of rows against 500k users) is hashed instead, and its distinct values are bisected."""
        values = pa.chunked_array(_chunks(column), pa.large_string())
        if len(values) < len(self):
            encoded = pc.dictionary_encode(values.combine_chunks())
            known = self._codes_of(encoded.dictionary)
            return np.append(known, UNKNOWN)[pc.fill_null(encoded.indices, len(known)).to_numpy()]
        found = pc.fill_null(pc.index_in(values, value_set=self.distinct), -1).to_numpy()
        return np.append(self.code_of, UNKNOWN)[found]   # -1 (not found, null) takes the appended UNKNOWN

    def _codes_of(self, distinct: pa.Array) -> np.ndarray:
        """Codes of distinct non-null strings, by bisection (long ones by the dict)."""
        fixed, long_rows = _encode(distinct)
        width = self.ordered.dtype.itemsize
        fits = pc.binary_length(distinct).to_numpy(zero_copy_only=False) + len(END) <= width
        codes = np.full(len(distinct), UNKNOWN, np.int64)
        codes[fits] = self._search(fixed[fits].astype(f"S{max(width, 1)}"))
        for row in np.flatnonzero(long_rows):
            codes[row] = self.long.get(distinct[int(row)].as_py().encode("utf-8") + END, UNKNOWN)
        return codes

    def lookup(self, ids: Sequence[str | None]) -> np.ndarray:
        """Codes of a request's ids (UNKNOWN for None and unknown ids), through `index`: found by the ids' own
        Python hashes and confirmed by comparing the strings, so a hash collision can never match a wrong id."""
        index = self.index
        n = len(ids)
        if not n or not len(index.hashes):
            return np.full(n, UNKNOWN, np.int64)
        wanted = np.fromiter(map(_hash, ids), np.int64, count=n)
        pos = np.minimum(np.searchsorted(index.hashes, wanted), len(index.hashes) - 1)
        rows = index.rows[pos]
        same = np.fromiter(map(operator.eq, self.distinct.take(rows).to_pylist(), ids), bool, count=n)
        if index.collides:        # ids sharing a hash sit side by side: a miss may be a later one of them
            for i in np.flatnonzero(~same):
                for p in range(int(pos[i]) + 1, len(index.hashes)):
                    if index.hashes[p] != wanted[i]:
                        break
                    if self.distinct[int(index.rows[p])].as_py() == ids[i]:
                        rows[i], same[i] = index.rows[p], True
                        break
        return np.where(same, self.code_of[rows], UNKNOWN)

    def build_index(self) -> HashIndex:
        """`index`, built now rather than by the first lookup (a pod's first request after a swap)."""
        return self.index

    @functools.cached_property
    def index(self) -> HashIndex:
        """The ids' Python hashes, sorted: a request's 500 ids found in ~50 us instead of encoding and bisecting
        bytes (~400 us, bench/serve.py). Built once per vocabulary, in slices so a pod's loader thread lets its
        requests have the GIL between them; a pod builds it while loading a snapshot (Snapshot.from_parquet)."""
        hashes = np.empty(len(self.distinct), np.int64)
        for start in range(0, len(self.distinct), INDEX_SLICE):
            part = self.distinct.slice(start, INDEX_SLICE).to_pylist()
            hashes[start:start + len(part)] = np.fromiter(map(_hash, part), np.int64, count=len(part))
        rows = np.argsort(hashes)
        hashes = hashes[rows]
        return HashIndex(hashes, rows, bool(len(hashes) > 1 and (hashes[1:] == hashes[:-1]).any()))

    def _search(self, fixed: np.ndarray) -> np.ndarray:
        """Positions of exact matches in `ordered` (UNKNOWN otherwise); b"" (no id) never matches."""
        if not len(self.ordered):
            return np.full(len(fixed), UNKNOWN, np.int64)
        pos = np.searchsorted(self.ordered, fixed).astype(np.int64)
        hit = self.ordered[np.minimum(pos, len(self.ordered) - 1)] == fixed
        return np.where(hit & (fixed != b""), pos, UNKNOWN)


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return [c.cast(pa.large_string()) for c in chunks]


def _encode(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(S<width> array of UTF-8 + END, mask of values over LONG_KEY bytes); nulls and long values give b"".

    Built from the array's offsets and data buffers with numpy: no Python object per value."""
    n = len(values)
    validity = np.asarray(values.is_valid()) if n else np.zeros(0, bool)
    offsets = (np.frombuffer(values.buffers()[1], np.int64)[values.offset:values.offset + n + 1] if n
               else np.zeros(1, np.int64))
    data = values.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.where(validity, np.diff(offsets), 0)
    long_rows = lengths + 1 > LONG_KEY
    short = np.where(long_rows | ~validity, 0, lengths)
    width = int(short.max(initial=0)) + 1
    matrix = np.zeros((n, width), np.uint8)
    for first in range(0, n, ENCODE_SLICE):   # short GIL holds: a pod builds this beside its requests
        part = short[first:first + ENCODE_SLICE]
        rows = np.repeat(np.arange(first, first + len(part)), part)
        within = np.arange(int(part.sum())) - np.repeat(np.cumsum(part) - part, part)
        matrix[rows, within] = data[np.repeat(offsets[first:first + len(part)], part) + within]
    ends = np.flatnonzero(validity & ~long_rows)
    matrix[ends, short[ends]] = END[0]
    return matrix.view(f"S{width}").ravel(), long_rows & validity
