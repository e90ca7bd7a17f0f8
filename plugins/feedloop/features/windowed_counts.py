"""The windowed engagement counts of the training set and its snapshot, computed with numpy over integer codes.

Why not SQL joins: as DuckDB joins of string keys, the counts of every (key, impression day) over arrival days
[d - w, d), and their join to every impression, were 60 of the 10M build's 154 CPU-seconds (profiled 2026-12-05).
Here ids become integer codes once, each entity's daily counts sit in arrays ordered by day, the counts as of a
day are one `np.bincount` per count and window over the entries of that window (exact: sums of integers), and an
impression row finds its key's counts by code. A key of a row that the daily counts never saw (a new user, an
item with no arrived event) counts 0, as the SQL's LEFT JOIN and coalesce gave.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa

from feedloop.core.vocabulary import UNKNOWN, Vocabulary
from feedloop.features import definitions as features


@dataclass(frozen=True)
class _EntityDaily:
    """One entity's daily counts: entries (key slot, arrival day) ordered by day, a key slot per distinct key."""

    entity: features.Entity
    keys: np.ndarray                 # int64, ascending: the composite code of every distinct key (its slot's)
    slot: np.ndarray                 # int32: the slot of each entry
    day: np.ndarray                  # int32 day ordinals, ascending
    counts: dict[str, np.ndarray]    # count name -> int32 per entry (np.bincount sums them as float64)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.slot.nbytes + self.day.nbytes + sum(c.nbytes for c in self.counts.values())

    def window(self, first: int, end: int) -> slice:
        """The entries of arrival days [first, end).

        The bounds are searched as int32, the days' own type: numpy searched a Python int by casting the whole day
        array to int64 first, 35 ms per search of 19M entries and most of the rows step's advance (measured)."""
        bounds = np.array([first, end], self.day.dtype)
        lo, hi = np.searchsorted(self.day, bounds)
        return slice(int(lo), int(hi))


class WindowedCounts:
    """Every entity's daily counts (the staging tables daily_<name>), by code, ready to be summed as of any day."""

    def __init__(self, distinct: dict[str, pa.Array], daily: dict[str, Iterable[pa.RecordBatch]], *, workers: int = 1):
        """distinct: every key column's distinct ids; daily: each entity's daily counts (its keys, arrival day d, its
        counts) in batches, encoded one by one so that no table of string ids is held (10M: 19M daily rows).
        workers: entities built at once (Arrow's hashing and numpy's sorts release the GIL), each from its own
        iterable (a DuckDB cursor of its own)."""
        self.vocabularies = {k: Vocabulary.of(ids) for k, ids in distinct.items()}
        with ThreadPoolExecutor(workers, thread_name_prefix="windowed-counts") as pool:
            built = pool.map(lambda e: self._entity(e, daily[e.name]), features.ENTITIES)
            self.entities = {e.name: entity for e, entity in zip(features.ENTITIES, built)}

    @property
    def nbytes(self) -> int:
        """What its arrays hold: memory outside DuckDB's limit (the build gives DuckDB that much less)."""
        return sum(v.nbytes for v in self.vocabularies.values()) + sum(e.nbytes for e in self.entities.values())

    def codes(self, table: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
        """The code of every key column of `table` that it has (UNKNOWN for nulls and unseen ids)."""
        return {k: v.codes(table[k]) for k, v in self.vocabularies.items() if k in table.column_names}

    def _entity(self, e: features.Entity, batches: Iterable[pa.RecordBatch]) -> _EntityDaily:
        composite, days = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)]
        counts = {c: [np.zeros(0, np.int32)] for c in e.counts}
        for batch in batches:
            composite.append(self.composite(e, self.codes(batch)))
            days.append(_days(batch["d"]))
            for c in e.counts:
                counts[c].append(batch[c].to_numpy().astype(np.int32))
        day, composite = np.concatenate(days), np.concatenate(composite)
        order = np.argsort(day, kind="stable")
        order = order[composite[order] != UNKNOWN]   # a key outside the vocabularies (none by construction)
        keys, slot = np.unique(composite[order], return_inverse=True)
        return _EntityDaily(e, keys, slot.astype(np.int32), day[order],
                            {c: np.concatenate(parts)[order] for c, parts in counts.items()})

    def composite(self, e: features.Entity, codes: dict[str, np.ndarray]) -> np.ndarray:
        """One int64 per row for the entity's key: code of the first key, then of the second in radix; UNKNOWN
        when any key is null or not in its vocabulary."""
        composite = np.zeros(len(codes[e.keys[0]]), np.int64)
        unknown = np.zeros(len(composite), bool)
        for k in e.keys:
            unknown |= codes[k] == UNKNOWN
            composite = composite * len(self.vocabularies[k]) + codes[k]
        return np.where(unknown, UNKNOWN, composite)

    def slots(self, table: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
        """Each entity's key slot for every row of `table` (its key columns; UNKNOWN for keys never counted).

        Apart from DayCounts.rows: a row's slots are the same on every day, so they can be found on another thread
        while the counts of the day are read (feedloop.features.dataset)."""
        codes = self.codes(table)
        return {name: _slots(daily.keys, self.composite(daily.entity, codes)) for name, daily in self.entities.items()}

    def as_of(self, day: date) -> DayCounts:
        """The counts over arrival days [day - w, day) for every key, window and count."""
        return DayCounts(self, day.toordinal())

    def through(self, first: date, end: date) -> Iterator[DayCounts]:
        """The counts as of each day of [first, end), in order: each day's from the day before's, by adding the
        entries of the day that entered each window and subtracting those of the day that left it.

        Why: summing each day's windows afresh re-read up to 28 days of entries per day (3.3 s of the 10M build,
        measured 2026-12-06); a day's change is two days of entries. Exact: the sums are of integers. The one
        DayCounts yielded is updated in place, so it is valid until the next is taken."""
        counts = self.as_of(first)
        for i in range((end - first).days):
            if i:
                counts.advance()
            yield counts


class DayCounts:
    """The windowed counts as of the start of one day, as float64 arrays indexed by key slot (UNKNOWN, -1, reads
    the 0 after the last slot)."""

    def __init__(self, counts: WindowedCounts, day: int):
        self.counts, self.day = counts, day
        self.sums: dict[str, dict[str, np.ndarray]] = {}
        for name, daily in counts.entities.items():
            self.sums[name] = {}
            for w in daily.entity.windows:
                entries = daily.window(day - w, day)
                for c in daily.entity.counts:
                    self.sums[name][features.count_column(name, c, w)] = np.bincount(   # + a 0 for UNKNOWN (-1)
                        daily.slot[entries], weights=daily.counts[c][entries], minlength=len(daily.keys) + 1)

    def advance(self) -> None:
        """Move to the next day. A day holds at most one entry per key (the daily counts are grouped by key and
        day), so each window's sums change by plain indexed adds, with no repeated index to lose."""
        for name, daily in self.counts.entities.items():
            entered = daily.window(self.day, self.day + 1)
            for w in daily.entity.windows:
                left = daily.window(self.day - w, self.day - w + 1)
                for c in daily.entity.counts:
                    sums = self.sums[name][features.count_column(name, c, w)]
                    sums[daily.slot[entered]] += daily.counts[c][entered]
                    sums[daily.slot[left]] -= daily.counts[c][left]
        self.day += 1

    def rows(self, slots: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every count column for rows given by their key slots (WindowedCounts.slots), 0 for keys never counted."""
        return {column: sums[slots[name]] for name in self.counts.entities for column, sums in self.sums[name].items()}

    def snapshot(self, name: str) -> pa.Table:
        """The entity's keys with an entry in its longest window before the day, their ids and counts."""
        daily = self.counts.entities[name]
        entries = daily.window(self.day - max(daily.entity.windows), self.day)
        slots = np.flatnonzero(np.bincount(daily.slot[entries], minlength=len(daily.keys)))
        composite = daily.keys[slots]
        ids: dict[str, pa.Array] = {}
        for k in reversed(daily.entity.keys):
            vocabulary = self.counts.vocabularies[k]
            ids[k] = vocabulary.ids().take(pa.array(composite % len(vocabulary)))
            composite = composite // len(vocabulary)
        return pa.table({**{k: ids[k] for k in daily.entity.keys},
                         **{column: pa.array(sums[slots]) for column, sums in self.sums[name].items()}})


def _days(column: pa.Array) -> np.ndarray:
    """Day ordinals (date.toordinal()) of a DATE column, as int32."""
    return column.cast(pa.int32()).to_numpy() + np.int32(date(1970, 1, 1).toordinal())


def _slots(keys: np.ndarray, composite: np.ndarray) -> np.ndarray:
    """The slot of each composite key in the ascending `keys`, UNKNOWN if absent.

    A single-key entity's slots are its codes (its vocabulary came from its own daily counts). Other queries are
    searched in sorted order: bisection over millions of keys in a random order missed the cache
    on every step (0.38 s for 700k queries into 5M keys, against 0.15 s sorted first, measured)."""
    if len(keys) and keys[0] == 0 and keys[-1] == len(keys) - 1:   # ascending and distinct: keys == arange
        return np.where(composite < len(keys), composite, UNKNOWN)
    order = np.argsort(composite)
    found = np.searchsorted(keys, composite[order])
    hit = (composite[order] != UNKNOWN) & (keys[np.minimum(found, len(keys) - 1)] == composite[order]) if len(keys) \
        else np.zeros(len(order), bool)
    slots = np.empty(len(composite), np.int64)
    slots[order] = np.where(hit, found, UNKNOWN)
    return slots
