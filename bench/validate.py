"""Validation benchmark: wall time and peak RSS of quality.validate_day on a day of N events.

    .venv/bin/python bench/validate.py [--events 20000 1000000 10000000] [--phases]

For each size: writes one day of synthetic engagement (24 hours x 4 Kafka partitions of
Parquet zstd objects, the ingest sink's layout) plus three trailing days of baseline summaries
(so the volume and CTR checks run too), then validates the day in a child process whose peak
RSS is its own. Prints a table and writes bench/results/validate.json. Starts its own embedded
S3 on free ports (a temporary state folder), so it never touches a running demo stack.
--phases adds where the time went: wall and CPU seconds per phase of the validation (S3 reads
and writes, DuckDB aggregates, GX, Data Docs, ...), from timers wrapped around those functions.
Targets: 10M events in <= 30 s with peak RSS <= 2 GB on 2 cores; a 20,000-event day (24 small
hours: fixed per-hour costs dominate) within 10 s of task time.
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
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

DAY = date(2026, 10, 4)
LIST_SIZE = 10
PARTITIONS = 4


def _hour_table(hour: int, n_requests: int, seed: int):
    """One hour of requests: LIST_SIZE impressions each, a click + dwell on ~8 % of impressions."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from feedloop.contract.events import DEVICES, SURFACES
    from feedloop.contract.lake import LAKE_SCHEMA

    rng = np.random.default_rng(seed)
    start_ms = int(datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=timezone.utc).timestamp() * 1000)
    req = np.repeat(np.arange(n_requests) + hour * 10_000_000, LIST_SIZE)
    pos = np.tile(np.arange(1, LIST_SIZE + 1, dtype=np.int32), n_requests)
    req_ts = np.repeat(start_ms + np.sort(rng.integers(0, 3_500_000, n_requests)), LIST_SIZE)
    tenant = np.repeat(rng.choice(3, n_requests, p=[0.5, 0.3, 0.2]), LIST_SIZE)
    surface = np.repeat(rng.choice(4, n_requests, p=[0.6, 0.2, 0.15, 0.05]), LIST_SIZE)
    device = np.repeat(rng.choice(3, n_requests), LIST_SIZE)
    clicked = rng.random(len(req)) < 0.3 / pos
    # rows: impressions, then clicks and dwells of the clicked impressions
    sel = np.concatenate([np.arange(len(req)), np.flatnonzero(clicked), np.flatnonzero(clicked)])
    kind = np.concatenate([np.zeros(len(req), np.int8), np.ones(clicked.sum(), np.int8), np.full(clicked.sum(), 2, np.int8)])
    ts = req_ts[sel] + np.where(kind == 0, 0, np.where(kind == 1, 4_000, 30_000))
    n = len(sel)

    def s(prefix: str, values) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pa.array(values).cast(pa.string()), "")

    types = np.array(["impression", "click", "dwell"])[kind]
    request_id = s("r-", req[sel])
    cols = {
        "event_id": pc.binary_join_element_wise(request_id, s("-", pos[sel]), pa.array(types), "-"),
        "event_ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
        "tenant_id": pa.array(np.array(["acme", "globex", "initech"])[tenant[sel]]),
        "user_id": s("u-", rng.integers(0, 500_000, n_requests)[(sel // LIST_SIZE)]),
        "item_id": s("i-", (req[sel] * 7 + pos[sel]) % 200_000),
        "author_id": s("a-", (req[sel] * 7 + pos[sel]) % 20_000),
        "request_id": request_id,
        "surface": pa.array(np.array(SURFACES)[surface[sel]]),
        "position": pa.array(pos[sel], pa.int32()),
        "event_type": pa.array(types),
        "dwell_ms": pa.array(np.where(kind == 2, 26_000, 0), pa.int64(), mask=kind != 2),
        "device": pa.array(np.array(DEVICES)[device[sel]]),
        "query": pa.nulls(n, pa.string()),
        "schema_version": pa.array(np.ones(n, np.int32)),
        "explore": pa.array(np.repeat(rng.random(n_requests) < 0.05, LIST_SIZE)[sel]),
        "model_version": pa.array(["v-bench"] * n, pa.string()),
        "kafka_topic": pa.array(["engagement"] * n),
        "kafka_partition": pa.array(np.arange(n) % PARTITIONS, pa.int32()),
        "kafka_offset": pa.array(np.arange(n) + hour * 10_000_000, pa.int64()),
        "ingest_ts": pa.array(ts + 2_000, pa.timestamp("ms", tz="UTC")),
    }
    return pa.table(cols, schema=LAKE_SCHEMA)


def _metrics(table) -> dict:
    """The baseline numbers validation keeps per hour (see quality.metrics.HourMetrics.summary)."""
    rows = {r["tenant_id"]: r["count_all"] for r in table.group_by("tenant_id").aggregate([([], "count_all")]).to_pylist()}
    impressions: dict = {}
    clicks: dict = {}
    for r in table.group_by(["tenant_id", "surface", "event_type"]).aggregate([([], "count_all")]).to_pylist():
        pair = f"{r['tenant_id']}/{r['surface']}"
        if r["event_type"] == "impression":
            impressions[pair] = r["count_all"]
        elif r["event_type"] == "click":
            clicks[pair] = r["count_all"]
    return {"rows": rows, "impressions": impressions, "clicks": clicks}


def write_day(settings, n_events: int) -> int:
    """Writes the day (and the trailing baseline summaries) to a fresh lake bucket; returns rows written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from feedloop.core import layout as lake
    from feedloop.core.layout import HourPartition
    from feedloop.quality import status
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(settings)
    store.ensure_bucket(settings.s3.lake_bucket)
    per_request = LIST_SIZE + 2 * 0.3 * sum(1 / k for k in range(1, LIST_SIZE + 1))  # impressions + click + dwell
    total, hours = 0, {}
    for hour in range(24):
        table = _hour_table(hour, int(n_events / 24 / per_request), seed=hour)
        for p in range(PARTITIONS):
            part = table.filter(pc.equal(table["kafka_partition"], p))
            sink = pa.BufferOutputStream()
            pq.write_table(part, sink, compression="zstd")
            key = lake.events_key(HourPartition(DAY, hour), "engagement", p, hour * 10_000_000)
            store.put(settings.s3.lake_bucket, key, sink.getvalue().to_pybytes())
        hours[f"{hour:02d}"] = {"state": "passed", "metrics": _metrics(table)}
        total += table.num_rows
    for k in (1, 2, 3):
        store.put_json(settings.s3.lake_bucket, status.summary_key(DAY - timedelta(days=k)), {"hours": hours})
    return total


class _Phases:
    """Wall and thread-CPU seconds per wrapped function; `self` excludes wrapped functions it called."""

    def __init__(self) -> None:
        import threading
        from collections import defaultdict

        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.inner: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    def wrap(self, owner: object, attr: str, name: str) -> None:
        import functools

        fn = getattr(owner, attr, None)
        if fn is None:  # renamed or gone: the table just lacks that line
            return

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(name)
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                stack.pop()
                self.wall[name] += dt
                self.cpu[name] += time.thread_time() - c
                self.calls[name] += 1
                if stack:
                    self.inner[stack[-1]] += dt

        setattr(owner, attr, timed)

    def install(self) -> None:
        from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
        from great_expectations.datasource.fluent import interfaces
        from great_expectations.validator import v1_validator

        from feedloop.core import storage
        from feedloop.quality import metrics, record, report, runner

        for attr in ("list_hours", "baseline_summaries", "read_hour", "hour_metrics", "_to_pandas", "instantiate",
                     "build_suite"):
            self.wrap(runner, attr, attr)
        self.wrap(record, "write_status", "write_status")
        self.wrap(record.DayRecorder, "_write_hour", "record an hour (on the writer pool)")
        self.wrap(record.DayRecorder, "finish", "record: wait for the hours, summary + index")
        self.wrap(runner, "impression_keys", "impression_keys (lookback)")
        self.wrap(metrics, "impression_keys", "impression_keys")
        self.wrap(runner._Engine, "__init__", "GX context + assets")
        self.wrap(interfaces.BatchDefinition, "get_batch", "GX get_batch")
        self.wrap(interfaces.Batch, "validate", "GX Batch.validate")
        self.wrap(v1_validator.Validator, "validate_expectation_suite", "GX validate_expectation_suite")
        self.wrap(ExpectationSuiteValidationResult, "to_json_dict", "GX result.to_json_dict")
        self.wrap(report, "data_docs", "Data Docs render")
        for attr in ("get", "put", "delete"):
            self.wrap(storage.ObjectStore, attr, f"S3 {attr.upper()}")

    def table(self, total: float) -> list[dict]:
        rows = [{"phase": k, "wall_s": round(v, 3), "share": round(v / total, 3), "cpu_s": round(self.cpu[k], 3),
                 "self_s": round(v - self.inner[k], 3), "calls": self.calls[k]} for k, v in self.wall.items()]
        return sorted(rows, key=lambda r: -r["wall_s"])


def child(phases: bool = False) -> None:
    """Validate DAY with the settings from env; print wall time, peak RSS and the verdict."""
    timers, gx_import = None, 0.0
    if phases:  # GX is imported before the timers go in; validate_day would import it (it is counted in wall)
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        t, c = time.perf_counter(), time.process_time()
        import great_expectations  # noqa: F401

        gx_import = time.perf_counter() - t
        timers = _Phases()
        timers.install()
        timers.wall["import great_expectations"] = gx_import
        timers.cpu["import great_expectations"] = time.process_time() - c
        timers.calls["import great_expectations"] = 1
    t_import = time.perf_counter()
    from feedloop import quality
    from feedloop.core.config import load_settings

    import_s = time.perf_counter() - t_import
    t0 = time.perf_counter()
    try:
        result = quality.validate_day(load_settings(), DAY, run_id="bench")
    except quality.ValidationFailed as exc:
        result = exc.result
    wall = time.perf_counter() - t0 + gx_import
    hours = result.summary["hours"]
    print(json.dumps({
        "wall_s": round(wall, 1),
        "import_s": round(import_s, 1),
        "cpu_s": round(time.process_time(), 1),
        **({"phases": timers.table(wall)} if timers else {}),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "verdict": result.summary["verdict"],
        "hours": len(hours),
        "rows_validated": sum(h["row_count"] for h in hours.values()),
        "failures": [f for h in hours.values() for f in h["failures"]][:5],
        "skipped_checks": sorted({s["check"] for h in hours.values() for s in h["skipped"]}),
    }))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--phases", action="store_true", help="time each phase of the validation too")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.phases)
        return

    from feedloop.ops import stack
    from feedloop.core.config import load_settings
    from tests.conftest import stack_environ

    os.environ.update(stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-bench-"))))
    settings = load_settings()
    stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
    results = []
    try:
        for n in args.events:
            bucket = f"bench-validate-{n}"
            env = {**os.environ, "FEEDLOOP_S3__LAKE_BUCKET": bucket}
            sized = settings.model_copy(update={"s3": settings.s3.model_copy(update={"lake_bucket": bucket})})
            t0 = time.perf_counter()
            rows = write_day(sized, n)
            print(f"wrote {rows:,} rows in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            cmd = [sys.executable, __file__, "--child", *(["--phases"] if args.phases else [])]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-4000:])
            results.append({"events": rows, **json.loads(done.stdout.strip().splitlines()[-1])})
    finally:
        stack.down(settings, echo=lambda m: None)
    for r in results:
        if "phases" in r:
            print(f"\n{r['events']:,} events: {r['wall_s']} s wall (+ {r['import_s']} s imports)")
            print(f"  {'phase':34} {'wall s':>8} {'share':>6} {'cpu s':>7} {'self s':>7} {'calls':>6}")
            for p in r["phases"]:
                print(f"  {p['phase']:34} {p['wall_s']:>8.2f} {p['share']:>6.1%} {p['cpu_s']:>7.2f} {p['self_s']:>7.2f}"
                      f" {p['calls']:>6}")
    print(f"\n{'events':>12} {'wall s':>8} {'import s':>9} {'cpu s':>7} {'peak RSS MB':>12}  verdict")
    for r in results:
        print(f"{r['events']:>12,} {r['wall_s']:>8} {r['import_s']:>9} {r['cpu_s']:>7} {r['peak_rss_mb']:>12}  "
              f"{r['verdict']}")
    load = os.getloadavg()
    out = ROOT / "bench" / "results" / "validate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine_cpus": os.cpu_count(), "load_average": [round(x, 2) for x in load],
                               "results": results}, indent=2) + "\n")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
