"""Producing the simulation: events to Kafka, the item catalog to the lake, and the run that drives both.

Why apart from the users: this is the only part that touches Kafka, S3 and the ranking pods; the world
and the users are pure and seeded, so tests and benchmarks step them without any service.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

from feedloop.core.config import Settings
from feedloop.core.layout import CATALOG_ITEMS_KEY
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import producer
from feedloop.ops.simulate.report import SimulationReport
from feedloop.ops.simulate.users import Record, Simulator
from feedloop.serving.client import RankingClient


def produce(settings: Settings, records: Iterator[Record], *, topic: str | None = None,
            on_sent: Callable[[int], None] | None = None) -> int:
    """Send records to Kafka with their arrival time as the record timestamp; returns the count."""
    prod = producer(settings.kafka)
    sent = 0
    try:
        for rec in records:
            prod.send(topic or settings.kafka.topic, key=rec.key, value=rec.value, timestamp_ms=rec.arrival_ms)
            sent += 1
            if on_sent and sent % 1000 == 0:
                on_sent(1000)
        prod.flush(timeout=120)
    finally:
        prod.close(timeout=30)
    if on_sent:
        on_sent(sent % 1000)
    return sent


def write_catalog(settings: Settings, sim: Simulator) -> str:
    """Publish the simulated item catalog to the lake (what a catalog service would export)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(sim.world.catalog(start=sim.start, ids=sim.ids), buf, compression="zstd")
    ObjectStore.from_settings(settings).put(settings.s3.lake_bucket, CATALOG_ITEMS_KEY, buf.getvalue())
    return CATALOG_ITEMS_KEY


def run(settings: Settings, *, start: date, days: int, events_per_day: int, seed: int | None = None,
        ground_truth: Path | None = None, progress: bool | None = None,
        serving_urls: list[str] | None = None, recommend: bool = False) -> SimulationReport:
    """Simulate `days` days from `start` and produce every event to Kafka.

    With `serving_urls` the users' feeds come from those pods (round-robin; the legacy policy while
    they have no model) and the pods log the impressions they served. With `recommend` too, a
    simulate.recommend_share of the requests ask the pods' POST /recommend (the whole catalog).
    """
    from tqdm import tqdm

    if recommend and not (serving_urls and settings.simulate.recommend_share > 0):
        raise ValueError("--recommend asks the serving pods for lists: give them with --via-serving URL[,URL...], "
                         f"and a simulate.recommend_share above 0 (it is {settings.simulate.recommend_share})")
    client = RankingClient(serving_urls) if serving_urls else None
    sim = Simulator(settings, start=start, days=days, events_per_day=events_per_day, seed=seed,
                    ranker=client.rank if client else None,
                    recommender=client.recommend if client and recommend else None,
                    recommend_share=settings.simulate.recommend_share)
    report = SimulationReport(start=start, days=days)
    write_catalog(settings, sim)
    if ground_truth is not None:
        sim.world.save(ground_truth, start=start, ids=sim.ids)
    show = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    try:
        dropped = client.dropped() if client else 0
        with tqdm(total=days * events_per_day, unit="ev", disable=not show, desc="simulate") as bar:
            produce(settings, sim.records(report), on_sent=bar.update)
        if client:
            client.drain()
            report.pod_impressions_dropped = client.dropped() - dropped
    finally:
        if client:
            client.close()
    report.seconds = time.perf_counter() - t0
    return report
