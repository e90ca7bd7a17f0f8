"""Hand-built engagement hours written to the lake exactly as the ingest sink lays them out.

Every tenant x surface gets the same small, deterministic traffic, so a good hour passes and
each broken fixture breaks one thing on purpose.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.contract import events
from feedloop.contract.lake import LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.core.layout import HourPartition

TENANTS = ("acme", "globex", "initech")
REQUESTS = 10   # per tenant and surface in an hour
LIST_SIZE = 5


def hour_events(day: date, hour: int, *, tenants: tuple[str, ...] = TENANTS,
                surfaces: tuple[str, ...] = events.SURFACES, tag: str = "") -> list[dict[str, Any]]:
    """Impressions for every request, a click + dwell on position 1 of every 4th request."""
    start = datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)
    out = []
    for t in tenants:
        for s in surfaces:
            for r in range(REQUESTS):
                request_id = f"req-{day:%Y%m%d}{hour:02d}-{t}-{s}-{r}{tag}"
                ts = start + timedelta(minutes=r * 5, seconds=tenants.index(t))
                for pos in range(1, LIST_SIZE + 1):
                    base = {"tenant_id": t, "user_id": f"u-{t}-{r}", "item_id": f"i-{pos}", "author_id": "a-1",
                            "request_id": request_id, "surface": s, "position": pos, "device": "web",
                            "query": "q" if s == "search" else None, "schema_version": 1}
                    out.append(_event(base, "impression", ts))
                    if pos == 1 and r % 4 == 0:
                        out.append(_event(base, "click", ts + timedelta(seconds=5)))
                        out.append(_event(base, "dwell", ts + timedelta(seconds=20), dwell_ms=15_000))
    return out


def _event(base: dict[str, Any], event_type: str, ts: datetime, dwell_ms: int | None = None) -> dict[str, Any]:
    return {**base, "event_id": f"{base['request_id']}-p{base['position']}-{event_type}",
            "event_ts": events.format_ts(ts), "event_type": event_type, "dwell_ms": dwell_ms}


def lake_table(evs: list[dict[str, Any]], *, partition: int = 0, first_offset: int = 0) -> pa.Table:
    return with_kafka_columns(events.events_to_table(evs), partition=partition, first_offset=first_offset)


def with_kafka_columns(table: pa.Table, *, partition: int = 0, first_offset: int = 0) -> pa.Table:
    """A contract table (events.ARROW_SCHEMA) plus the four columns the ingest sink adds."""
    n = table.num_rows
    ingest = pa.array([datetime(2030, 1, 1, tzinfo=timezone.utc)] * n, pa.timestamp("ms", tz="UTC"))
    return pa.Table.from_arrays(
        [*table.columns, pa.array(["engagement"] * n), pa.array([partition] * n, pa.int32()),
         pa.array(range(first_offset, first_offset + n), pa.int64()), ingest],
        schema=LAKE_SCHEMA,
    )


def write(store, bucket: str, hour: HourPartition, table: pa.Table, *, partition: int = 0, chunk: int = 0) -> str:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    key = lake.events_key(hour, "engagement", partition, chunk)
    store.put(bucket, key, sink.getvalue().to_pybytes())
    return key


def write_good_day(store, bucket: str, day: date, hours: tuple[int, ...]) -> None:
    for h in hours:
        write(store, bucket, HourPartition(day, h), lake_table(hour_events(day, h)))
