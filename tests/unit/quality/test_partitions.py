"""Reading an hour partition: every object (fetched concurrently) in key order, with the ETags of the
bytes read; objects deleted since listing are left out; incompatible schemas are named."""

from __future__ import annotations

import threading
import time
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.core import layout as lake
from feedloop.core.layout import HourPartition
from feedloop.quality.partitions import IncompatibleObjects, read_hour
from feedloop.core.storage import StoredObject

HOUR = HourPartition(date(2026, 11, 5), 22)


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


class _Store:
    """get() of an in-memory bucket; slower for the first keys, so concurrent fetches finish out of order."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects
        self.threads: set[int] = set()

    def get(self, bucket: str, key: str) -> StoredObject | None:
        self.threads.add(threading.get_ident())
        time.sleep(0.05 if key.endswith(("0.parquet", "1.parquet")) else 0)
        body = self.objects.get(key)
        return None if body is None else StoredObject(body, f'"etag-{key.rsplit("/", 1)[-1]}"')


def _key(p: int) -> str:
    return lake.events_key(HOUR, "engagement", p, 100 * p)


def test_objects_are_concatenated_in_key_order_with_their_etags():
    objects = {_key(p): _parquet(pa.table({"x": [p * 10, p * 10 + 1], "y": ["a", "b"]})) for p in range(5)}
    store = _Store(objects)
    data = read_hour(store, "lake", HOUR, list(reversed(objects)))
    assert data.table.column("x").to_pylist() == [0, 1, 10, 11, 20, 21, 30, 31, 40, 41]
    assert list(data.objects) == sorted(objects)
    assert data.objects[_key(3)] == f"etag-{_key(3).rsplit('/', 1)[-1]}"
    assert len(store.threads) > 1  # fetched concurrently


def test_columns_are_selected_and_a_deleted_object_is_skipped():
    objects = {_key(p): _parquet(pa.table({"x": [p], "y": ["a"]})) for p in range(3)}
    store = _Store(objects)
    data = read_hour(store, "lake", HOUR, [*objects, _key(7)], columns=["x"])
    assert data.table.column_names == ["x"]
    assert data.table.column("x").to_pylist() == [0, 1, 2]
    assert _key(7) not in data.objects


def test_one_object_and_none_at_all():
    store = _Store({_key(0): _parquet(pa.table({"x": [1]}))})
    assert read_hour(store, "lake", HOUR, [_key(0)]).table.num_rows == 1
    empty = read_hour(store, "lake", HOUR, [_key(5)])
    assert empty.table.num_rows == 0 and empty.objects == {}


def test_incompatible_schemas_name_every_object():
    objects = {_key(0): _parquet(pa.table({"x": [1]})), _key(1): _parquet(pa.table({"x": [pa.scalar(["l"])]}))}
    with pytest.raises(IncompatibleObjects) as err:
        read_hour(_Store(objects), "lake", HOUR, list(objects))
    assert _key(0) in str(err.value) and _key(1) in str(err.value)


def test_a_corrupt_object_raises_arrow_invalid():
    objects = {_key(0): _parquet(pa.table({"x": [1]})), _key(1): b"not parquet"}
    with pytest.raises(pa.ArrowInvalid):
        read_hour(_Store(objects), "lake", HOUR, list(objects))
