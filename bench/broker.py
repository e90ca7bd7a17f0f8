"""Embedded broker soak: how fast a consumer reads as the log grows, per Tansu storage engine.

    .venv/bin/python bench/broker.py [--storage s3,memory] [--seconds 600] [--every 60] [--rate 2100]

For each engine it starts its own embedded S3 + Kafka (free ports, a temporary state folder), then
producers like the closed loop's (three kafka-python producers, keyed records of ~280 bytes spread over
the topic's partitions, `--rate` records/s in all) run for `--seconds`. Every `--every` seconds a
consumer with the ingest sink's own settings (feedloop.core.streams.consumer) reads partition 0 from
its first offset for 10 s; the row gives the records it got per second, the log's length and, for s3,
the batch objects Tansu keeps for the partition (its fetch lists them all on every request).
Prints a table and writes bench/results/broker.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

PROBE_SECONDS = 10.0


def _produce(settings, topic: str, rate: int, stop: threading.Event, sent: list[int]) -> None:
    from feedloop.core.streams import producer

    out = producer(settings.kafka)
    value = json.dumps({"event_type": "impression", "pad": "x" * 240}).encode()
    while not stop.is_set():
        tick = time.monotonic()
        for _ in range(max(rate // 10, 1)):
            out.send(topic, key=str(random.random()).encode(), value=value)
            sent[0] += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    out.flush()


def _objects(settings, topic: str) -> int | None:
    """Tansu's s3 engine keeps one object per produced batch under the partition's records/ folder."""
    if settings.stack.kafka_storage != "s3":
        return None
    from feedloop.core.storage import ObjectStore
    from feedloop.ops.stack.services import kafka_bucket

    client = ObjectStore.from_settings(settings).client
    prefix = f"clusters/tansu_cluster/topics/{topic}/partitions/0000000000/records/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=kafka_bucket(settings), Prefix=prefix)
    return sum(page.get("KeyCount", 0) for page in pages)


def _probe(settings, topic: str) -> dict:
    """Records per second a sink-configured consumer reads from the start of partition 0 (for 10 s, or
    until it reaches the log's end)."""
    from kafka import TopicPartition

    from feedloop.core.streams import consumer

    tp = TopicPartition(topic, 0)
    reader = consumer(settings.kafka)
    reader.assign([tp])
    end = reader.end_offsets([tp])[tp]
    reader.seek(tp, 0)
    got, longest_empty, empty_since = 0, 0.0, None
    start = time.monotonic()
    while time.monotonic() - start < PROBE_SECONDS and got < end:
        n = sum(len(v) for v in reader.poll(timeout_ms=1000).values())
        got += n
        now = time.monotonic()
        empty_since = (empty_since or now) if n == 0 else None
        longest_empty = max(longest_empty, now - empty_since if empty_since else 0.0)
    elapsed = time.monotonic() - start
    reader.close()
    return {"log_end": end, "read_per_s": round(got / elapsed), "longest_empty_s": round(longest_empty, 1)}


def soak(storage: str, seconds: float, every: float, rate: int) -> dict:
    from feedloop.core.config import load_settings
    from feedloop.core.streams import ensure_topic
    from feedloop.ops import stack
    from tests.conftest import stack_environ

    env = {**stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-broker-"))),
           "FEEDLOOP_STACK__KAFKA_STORAGE": storage}
    settings = load_settings(environ={**os.environ, **env})
    stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
    topic, stop, sent, rows = "soak", threading.Event(), [0], []
    try:
        ensure_topic(settings.kafka, topic=topic, partitions=4)
        threads = [threading.Thread(target=_produce, args=(settings, topic, share, stop, sent), daemon=True)
                   for share in (rate * 5 // 7, rate // 7, rate // 7)]
        for t in threads:
            t.start()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(every)
            row = {"t_s": round(time.monotonic() - start), "sent": sent[0], **_probe(settings, topic),
                   "batch_objects": _objects(settings, topic)}
            rows.append(row)
            print(f"  {storage}: {json.dumps(row)}", file=sys.stderr, flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        stack.down(settings, echo=lambda m: None)
    return {"storage": storage, "rate": rate, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="s3,memory")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--rate", type=int, default=2100, help="records/s produced in all")
    args = parser.parse_args()
    before = os.getloadavg()
    runs = [soak(s, args.seconds, args.every, args.rate) for s in args.storage.split(",")]
    result = {"runs": runs, "load_average": {"before": before, "after": os.getloadavg()},
              "probe_seconds": PROBE_SECONDS}
    out = ROOT / "bench" / "results" / "broker.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"load average before {before[0]:.2f}, after {result['load_average']['after'][0]:.2f} (1 min)")
    print(f"{'engine':8} {'t (s)':>6} {'log end p0':>11} {'objects p0':>11} {'read/s from 0':>14} "
          f"{'longest empty':>14}")
    for run in runs:
        for r in run["rows"]:
            objects = "-" if r["batch_objects"] is None else f"{r['batch_objects']:,}"
            print(f"{run['storage']:8} {r['t_s']:>6} {r['log_end']:>11,} {objects:>11} {r['read_per_s']:>14,} "
                  f"{r['longest_empty_s']:>13} s")
    print(f"written {out}")


if __name__ == "__main__":
    main()
