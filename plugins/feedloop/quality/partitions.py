"""The hour partitions of a day in the lake, with the exact objects (key + ETag) that make them up.

Why ETags: a validation vouches for the bytes it read. When a late event adds an object or a
replay rewrites one, the partition's object set differs from the recorded one and the partition
counts as unvalidated again.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa

from feedloop.core import layout as lake
from feedloop.core.layout import HourPartition
from feedloop.core.storage import ObjectStore

_READERS = 8  # concurrent GETs per hour: the objects of one hour (one per Kafka partition and flush)


@dataclass(frozen=True)
class HourData:
    partition: HourPartition
    table: pa.Table
    objects: dict[str, str]  # key -> ETag of the bytes actually read


class IncompatibleObjects(ValueError):
    """Objects of one hour whose Parquet schemas cannot be combined."""


def list_hours(store: ObjectStore, bucket: str, day: date) -> dict[HourPartition, dict[str, str]]:
    """Every hour partition of `day` that holds objects, with {key: ETag} per hour."""
    hours: dict[HourPartition, dict[str, str]] = defaultdict(dict)
    for key, etag in list_etags(store, bucket, lake.day_prefix(day)).items():
        ref = lake.parse_key(key)
        if ref is not None and ref.hour is not None:
            hours[ref.hour][key] = etag
    return dict(sorted(hours.items()))


def list_etags(store: ObjectStore, bucket: str, prefix: str) -> dict[str, str]:
    paginator = store.client.get_paginator("list_objects_v2")
    return {
        item["Key"]: _etag(item["ETag"])
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }


def read_hour(store: ObjectStore, bucket: str, partition: HourPartition, keys: list[str],
              columns: list[str] | None = None) -> HourData:
    """All objects of one hour as one Arrow table (schemas promoted where Arrow can).

    The objects are fetched and decoded concurrently (boto3 clients are thread-safe, Parquet decoding
    releases the GIL): an hour is 4+ objects, and one GET after another paid each round trip in turn.
    """
    import pyarrow.parquet as pq

    def fetch(key: str) -> tuple[str, pa.Table, str] | None:
        found = store.get(bucket, key)
        if found is None:  # deleted since listing: validate what exists now
            return None
        return key, pq.read_table(pa.BufferReader(found.body), columns=columns), _etag(found.etag)

    ordered = sorted(keys)
    if len(ordered) > 1:
        with ThreadPoolExecutor(min(len(ordered), _READERS), thread_name_prefix="read-hour") as pool:
            fetched = list(pool.map(fetch, ordered))
    else:
        fetched = [fetch(key) for key in ordered]
    tables, objects = [], {}
    for item in fetched:
        if item is not None:
            tables.append(item[1])
            objects[item[0]] = item[2]
    if not tables:
        return HourData(partition, pa.table({}), objects)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        schemas = "; ".join(f"{k}: {t.schema.to_string(show_schema_metadata=False)}" for k, t in zip(objects, tables))
        raise IncompatibleObjects(f"{partition.prefix}: objects cannot be combined ({exc}): {schemas}") from None
    return HourData(partition, table, objects)


def hour_start(partition: HourPartition) -> datetime:
    """The partition's window start (UTC); the window is [start, start + 1 h)."""
    return datetime(partition.day.year, partition.day.month, partition.day.day, partition.hour, tzinfo=timezone.utc)


def previous_hours(partition: HourPartition, n: int) -> list[HourPartition]:
    start = hour_start(partition)
    return [HourPartition.of(start - timedelta(hours=k)) for k in range(n, 0, -1)]


def _etag(etag: str) -> str:
    return etag.strip('"')
