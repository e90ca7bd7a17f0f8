"""Ingest benchmark: (a) sink-only throughput on pre-fetched records, (b) end to end from the
embedded broker, side by side with a bare kafka-python consumer reading the same topic.

    .venv/bin/python bench/ingest.py [--events 5000000] [--e2e-events 300000] [--e2e-days 10,1] [--sink-cores 1]

Prints a table and writes bench/results/ingest.json. Starts its own embedded S3 + Kafka on
free ports (a temporary state folder), so it never touches a running demo stack.
The sink-only child is pinned to --sink-cores CPUs (sched_setaffinity; 0 = not pinned) and runs the
sink's own pipeline (the poll thread's role is played by the loop handing it pre-fetched batches);
it reports its CPU time too, which a loaded machine disturbs less than the wall time.
End to end runs once per --e2e-days value: the same events spread over that many simulated days. Why two:
the sink writes one object per (partition, event hour, chunk), so a quiet topic (10 days: ~1,000 objects
for 300k events) pays botocore's ~1.4 ms of CPU per put ~8x more often than a busier one (1 day: ~130).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dense_template(settings, n: int) -> list:
    """n simulated records squeezed into the first 30 minutes of a day: the density of a
    10M-events/day topic, where a 50k-offset chunk spans well under an hour per partition."""
    import orjson

    from feedloop.contract.events import format_ts, parse_ts, to_json
    from feedloop.ops.simulate import Record, SimulationReport, Simulator

    start = date(2026, 10, 1)
    sim = Simulator(settings, start=start, days=1, events_per_day=n, seed=1)
    records = list(sim.records(SimulationReport(start, 1)))[:n]
    t0 = records[0].arrival_ms
    out = []
    for r in records:
        event = orjson.loads(r.value)
        ts = parse_ts(event["event_ts"])
        squeezed = (ts.timestamp() * 1000 - t0) / 48 + t0
        event["event_ts"] = format_ts(datetime.fromtimestamp(squeezed / 1000, tz=timezone.utc))
        out.append(Record(int(t0 + (r.arrival_ms - t0) / 48) + 1, r.key, to_json(event)))
    return out


def sink_only(n_events: int, cores: int, batch: int = 20_000) -> dict:
    """Run in a child process so its peak RSS is its own: decode -> validate -> Arrow -> Parquet -> S3."""
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore
    from feedloop.ingest.partition import PartitionSink
    from feedloop.ingest.pipeline import Pipeline

    if cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    settings = load_settings()
    store = ObjectStore.from_settings(settings)
    template = _dense_template(settings, 200_000)
    sinks = {p: PartitionSink(store, settings, "bench", p) for p in range(4)}
    offsets = {p: 0 for p in sinks}
    # Pre-fetched batches, built before the clock starts. Template records repeat only across
    # chunks (the template is longer than a chunk), so the per-chunk event_id dedupe drops nothing.
    batches = [([r.arrival_ms for r in template[i:i + batch]], [r.value for r in template[i:i + batch]])
               for i in range(0, len(template), batch)]
    rss_start = peak_rss_mb()
    pipeline = Pipeline(sinks, depth=settings.ingest.pipeline_depth)
    cpu0, t0 = time.process_time(), time.perf_counter()
    sent = nbytes = 0
    n = 0
    while sent < n_events:
        p = n % 4
        stamps, values = batches[n % len(batches)]
        k = min(len(values), n_events - sent)
        o = offsets[p]
        pipeline.submit(p, list(range(o, o + k)), stamps[:k], values[:k])
        offsets[p] += k
        sent += k
        nbytes += sum(map(len, values[:k]))
        n += 1
    pipeline.close()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"events": sent, "cores": len(os.sched_getaffinity(0)), "seconds": round(seconds, 2),
            "cpu_s": round(cpu, 2), "events_per_s": round(sent / seconds), "events_per_cpu_s": round(sent / cpu),
            "mb_per_s": round(nbytes / seconds / 1e6, 1), "peak_rss_mb": round(peak_rss_mb()),
            "rss_before_mb": round(rss_start)}


def end_to_end(n_events: int, days: int) -> dict:
    from kafka import TopicPartition

    from feedloop.ops import simulate
    from feedloop.core.config import load_settings
    from feedloop.ingest import sink
    from feedloop.core.streams import consumer, ensure_topic

    topic = f"bench-{days}d-{int(time.time())}"
    os.environ["FEEDLOOP_KAFKA__TOPIC"] = topic
    settings = load_settings()
    ensure_topic(settings.kafka)
    sim = simulate.Simulator(settings, start=date(2026, 10, 1), days=days, events_per_day=max(1, n_events // days),
                             seed=2)
    t0 = time.perf_counter()
    produced = simulate.produce(settings, sim.records(simulate.SimulationReport(date(2026, 10, 1), days)))
    produce_s = time.perf_counter() - t0

    # The sink's figure includes connecting, reading the topic's metadata and seeking: the bare consumer's does too.
    connect = time.perf_counter()
    c = consumer(settings.kafka, max_poll_records=20_000, fetch_max_bytes=settings.ingest.max_poll_bytes)
    c.assign([TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))])
    c.seek_to_beginning()
    t0 = time.perf_counter()
    read, empty = 0, 0
    while empty < settings.ingest.empty_polls_to_stop:
        polled = c.poll(timeout_ms=settings.ingest.poll_timeout_ms, max_records=20_000)
        empty = 0 if polled else empty + 1
        read += sum(len(v) for v in polled.values())
    bare_s, bare_setup_s = time.perf_counter() - t0, t0 - connect
    c.close()

    t0 = time.perf_counter()
    report = sink.run(settings, run_id=f"bench-{days}d")
    sink_s = time.perf_counter() - t0
    # Both loops end with the same empty-poll wait; compare the time spent moving data too.
    idle = settings.ingest.empty_polls_to_stop * settings.ingest.poll_timeout_ms / 1000
    return {"days": days, "objects": len(report.objects), "events": produced, "produce_s": round(produce_s, 1),
            "bare_consumer_s": round(bare_setup_s + bare_s, 2), "bare_setup_s": round(bare_setup_s, 2),
            "bare_read": read, "sink_s": round(sink_s, 2), "sink_events": report.records,
            "bare_events_per_s": round(read / (bare_setup_s + bare_s)),
            "sink_events_per_s": round(report.records / sink_s),
            "ratio": round((bare_setup_s + bare_s) / sink_s, 3),
            "ratio_bare_without_setup": round(bare_s / sink_s, 3),
            "ratio_excluding_idle_polls": round((bare_setup_s + bare_s - idle) / max(1e-9, sink_s - idle), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--e2e-events", type=int, default=300_000)
    parser.add_argument("--e2e-days", default="10,1", help="simulated days the end-to-end events span, one run each")
    parser.add_argument("--sink-cores", type=int, default=1, help="CPUs the sink-only child may use (0: all)")
    parser.add_argument("--child", choices=["sink-only"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(sink_only(args.events, args.sink_cores)))
        return

    from feedloop.ops import stack
    from feedloop.core.config import load_settings
    from tests.conftest import stack_environ

    before = os.getloadavg()
    env = stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-bench-")))
    os.environ.update(env)
    settings = load_settings()
    stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
    try:
        child = subprocess.run([sys.executable, __file__, "--child", "sink-only", "--events", str(args.events),
                                "--sink-cores", str(args.sink_cores)],
                               capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if child.returncode:
            raise SystemExit(child.stderr)
        a = json.loads(child.stdout.strip().splitlines()[-1])
        b = [end_to_end(args.e2e_events, int(d)) for d in args.e2e_days.split(",")]
    finally:
        stack.down(settings, echo=lambda m: None)
    result = {"sink_only": a, "end_to_end": b,
              "load_average": {"before": before, "after": os.getloadavg()},
              "targets": {"sink_only_events_per_s": 300_000, "sink_only_peak_rss_mb": 1024, "e2e_ratio": 0.9}}
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"load average before {before[0]:.2f}, after {result['load_average']['after'][0]:.2f} (1 min)")
    print(f"(a) sink only, {a['events']:,} events on {a['cores']} core(s): {a['events_per_s']:,} events/s, "
          f"{a['mb_per_s']} MB/s, {a['events_per_cpu_s']:,} events per CPU-second, peak RSS {a['peak_rss_mb']} MB "
          f"(target >= 300,000 events/s, <= 1024 MB)")
    for e in b:
        print(f"(b) end to end, {e['events']:,} events over {e['days']} day(s), {e['objects']:,} objects: sink "
              f"{e['sink_events_per_s']:,} events/s vs bare consumer {e['bare_events_per_s']:,} events/s, both timed "
              f"from connecting -> ratio {e['ratio']} (target >= 0.9; {e['ratio_bare_without_setup']} with the bare "
              f"consumer's {e['bare_setup_s']} s of connecting left out, as before 2026-12-06)")
    print(f"written {out}")


if __name__ == "__main__":
    main()
