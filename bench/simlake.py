"""The closed-loop simulator's traffic written straight into the lake, in process: no Kafka, no ingest, no pods.

Why: a bench that measures what the training set and the ranker make of simulated traffic needs the lake that
ingest would have written (LAKE_SCHEMA, event-day partitions, arrival time as ingest_ts) and the world that
generated it, without running the services (tests/integration/test_retriever_daily.py fills its lake with it too).
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.contract.lake import LAKE_SCHEMA
from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.ops.simulate import Ids, SimulationReport, Simulator, World, true_gain


def write_events(settings: Settings, store: ObjectStore, sim: Simulator) -> SimulationReport:
    """Every simulated day's events as lake objects, one per (simulated day, event day), offsets in arrival order."""
    report = SimulationReport(start=sim.start, days=sim.days)
    offset, topic = 0, settings.kafka.topic
    for day in range(sim.days):
        by_day: dict = defaultdict(list)
        for record in sim.day_records(day, report):
            event = orjson.loads(record.value)
            event["event_ts"] = datetime.fromisoformat(event["event_ts"])
            by_day[event["event_ts"].date()].append({
                **event, "kafka_topic": topic, "kafka_partition": 0, "kafka_offset": offset,
                "ingest_ts": datetime.fromtimestamp(record.arrival_ms / 1000, timezone.utc)})
            offset += 1
        for event_day, rows in by_day.items():
            key = layout.events_key(layout.HourPartition(event_day, 0), topic, 0, rows[0]["kafka_offset"])
            store.put(settings.s3.lake_bucket, key, _parquet(pa.Table.from_pylist(rows, LAKE_SCHEMA)))
    return report


def gains(world: World, ids: Ids, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
    """The hidden truth of shown rows: each item's click probability for its user had they examined it."""
    users = np.fromiter((ids.user_index[u] for u in user_ids), np.int64, len(user_ids))
    items = np.fromiter((ids.item_index[i] for i in item_ids), np.int64, len(item_ids))
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    out = np.empty(len(users))
    for rows in np.split(order, bounds):
        if len(rows):
            out[rows] = true_gain(world, int(users[rows[0]]), items[rows])
    return out


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
