"""Produce and read records on the embedded Kafka for ingest tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pyarrow as pa

from feedloop.contract.lake import DEADLETTER_SCHEMA, LAKE_SCHEMA
from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.contract.events import format_ts
from feedloop.ingest.writer import read_parquet
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import producer


def event(i: int, ts: datetime, **changes: Any) -> dict[str, Any]:
    base = {
        "event_id": f"ev-{i:07d}", "event_ts": format_ts(ts), "tenant_id": "acme", "user_id": f"acme-u{i % 7}",
        "item_id": f"acme-i{i % 11}", "author_id": "acme-a1", "request_id": f"req-{i // 10}", "surface": "feed",
        "position": i % 10 + 1, "event_type": "impression", "dwell_ms": None, "device": "web", "query": None,
        "schema_version": 1,
    }
    return {**base, **changes}


def send(settings: Settings, topic: str, items: list[tuple[bytes, datetime]], *, partition: int | None = 0) -> None:
    """Send raw values with the given arrival times (record timestamps)."""
    prod = producer(settings.kafka)
    try:
        for value, arrival in items:
            prod.send(topic, value=value, timestamp_ms=int(arrival.timestamp() * 1000), partition=partition)
        prod.flush(30)
    finally:
        prod.close(10)


def send_events(settings: Settings, topic: str, evs: list[dict], *, delay: timedelta = timedelta(seconds=2),
                partition: int | None = 0) -> None:
    send(settings, topic, [(orjson.dumps(e), datetime.fromisoformat(e["event_ts"].replace("Z", "+00:00")) + delay)
                           for e in evs], partition=partition)


def lake_objects(store: ObjectStore, settings: Settings, topic: str, prefix: str = lake.EVENTS_PREFIX) -> dict[str, bytes]:
    out = {}
    for key in store.list_keys(settings.s3.lake_bucket, prefix):
        ref = lake.parse_key(key)
        if ref and ref.topic == topic:
            out[key] = store.get(settings.s3.lake_bucket, key).body
    return out


def lake_rows(store: ObjectStore, settings: Settings, topic: str) -> pa.Table:
    objs = lake_objects(store, settings, topic)
    if not objs:
        return LAKE_SCHEMA.empty_table()
    return pa.concat_tables(read_parquet(body, LAKE_SCHEMA) for body in objs.values())


def deadletters(store: ObjectStore, settings: Settings, topic: str) -> pa.Table:
    objs = lake_objects(store, settings, topic, lake.DEADLETTER_PREFIX)
    if not objs:
        return DEADLETTER_SCHEMA.empty_table()
    return pa.concat_tables(read_parquet(body, DEADLETTER_SCHEMA) for body in objs.values())


NOW = datetime.now(timezone.utc).replace(microsecond=0)
