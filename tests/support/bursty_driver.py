"""Three weeks of bursty traffic through `retrain_ranker`, day by day, in ONE process.

Run by tests/integration/test_bursty_traffic.py with the session stack's Airflow environment:
each day's ARRIVALS land in the lake (one new object per event hour, so late events add objects to
hours already validated; the day's broken hour, if any, is broken on purpose), then the real DAG runs
for that day with `DAG.test()` (what `airflow dags test` does, without a new interpreter per day),
the promotion steps after evaluate marked done. Writes what happened as JSON to argv[1].
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from feedloop.contract import events
from feedloop.ops import simulate
from feedloop.core.config import load_settings
from feedloop.core.layout import HourPartition
from feedloop.core.storage import ObjectStore
from tests.support import lakedata

START, DAYS = date(2026, 10, 1), 21
EVENTS_PER_DAY = 8_000
SEED = 11
# covered by test_retrain_dag; embed_catalog too (with no embeddings the content features are NaN, a tested path)
SKIPPED_STEPS = "^(embed_catalog|publish_features|export|gate|refit|register|approve|flip|retriever)$"


def _rename_a_field(table: pa.Table) -> pa.Table:
    return table.rename_columns(["pos" if n == "position" else n for n in table.column_names])


def _duplicate_half(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table, table.slice(0, table.num_rows // 2)])


def _positions_all_1(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("position")
    return table.set_column(i, table.schema.field(i), pa.array([1] * table.num_rows, pa.int32()))


def _no_clicks_on_the_busiest_surface(table: pa.Table) -> pa.Table:
    impressions = table.filter(pc.equal(table["event_type"], "impression"))
    pairs = Counter(zip(impressions["tenant_id"].to_pylist(), impressions["surface"].to_pylist()))
    (tenant, surface), shown = pairs.most_common(1)[0]
    if shown < 200:
        raise SystemExit(f"the fixture needs a tenant + surface with ctr_min_impressions 200 impressions in the "
                         f"busiest hour; it has {shown}")
    clicks = pc.and_(pc.and_(pc.equal(table["tenant_id"], tenant), pc.equal(table["surface"], surface)),
                     pc.equal(table["event_type"], "click"))
    return table.filter(pc.invert(clicks))


def _outcomes_without_impressions(table: pa.Table) -> pa.Table:
    return table.filter(pc.not_equal(table["event_type"], "impression"))


# day index -> (what breaks the busiest hour of that day, the blocking check that must quarantine it)
BROKEN = {
    7: (_rename_a_field, "columns"),
    9: (_duplicate_half, "event_id_unique"),
    11: (_positions_all_1, "position_spread"),
    13: (_no_clicks_on_the_busiest_surface, "ctr_not_zero"),
    15: (_outcomes_without_impressions, "outcomes_have_impression"),
}


# days on which a tenant nobody configured sends a tenth of the requests of the day's busiest hour:
# unusual but valid data (unknown_tenant_share warns; the hour trains)
NEW_TENANT_DAYS = (4, 17)


def _new_tenant(table: pa.Table) -> pa.Table:
    requests = pc.utf8_slice_codeunits(table["request_id"], -1)
    tenants = pc.if_else(pc.equal(requests, "7"), "newco", table["tenant_id"])
    i = table.schema.get_field_index("tenant_id")
    return table.set_column(i, table.schema.field(i), tenants)


def land(store: ObjectStore, bucket: str, records: list[simulate.Record], d: int) -> dict[str, str]:
    """One day's arrivals as one object per event hour; {check: dt=D/hour=HH} of the hour broken on purpose."""
    decoded = events.decode_batch([r.value for r in records])
    if decoded.rejected:
        raise SystemExit(f"the simulator produced {len(decoded.rejected)} malformed events")
    table = lakedata.with_kafka_columns(decoded.table, first_offset=d * 1_000_000)
    arrived = pa.array([r.arrival_ms for r in records], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    i = table.schema.get_field_index("ingest_ts")
    table = table.set_column(i, table.schema.field(i), arrived)  # the sink stamps the arrival
    labels = pc.strftime(table["event_ts"], format="%Y-%m-%dT%H")
    hours = {label: table.filter(pc.equal(labels, label)) for label in pc.unique(labels).to_pylist()}
    broken = {}
    today = str(START + timedelta(days=d))
    busiest = max((h for h in hours if h.startswith(today)), key=lambda h: hours[h].num_rows)
    if d in BROKEN:
        change, check = BROKEN[d]
        hours[busiest] = change(hours[busiest])
        broken[check] = f"dt={busiest[:10]}/hour={busiest[11:]}"
    if d in NEW_TENANT_DAYS:
        hours[busiest] = _new_tenant(hours[busiest])
    for label, part in hours.items():
        hour = HourPartition(date.fromisoformat(label[:10]), int(label[11:]))
        lakedata.write(store, bucket, hour, part, chunk=d)  # a late arrival: a new object in its hour
    return broken


def main(out: str) -> None:
    from airflow.utils.cli import get_bagged_dag

    settings = load_settings()
    settings = settings.model_copy(update={"simulate": settings.simulate.model_copy(update={"traffic": "bursty"})})
    store, bucket = ObjectStore.from_settings(settings), settings.s3.lake_bucket
    dag = get_bagged_dag(None, "retrain_ranker")
    sim = simulate.Simulator(settings, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY, seed=SEED)
    simulate.write_catalog(settings, sim)
    report = simulate.SimulationReport(START, DAYS)
    result = {"days": {}, "broken": {}}
    for d in range(DAYS):
        day = START + timedelta(days=d)
        result["broken"] |= land(store, bucket, sim.day_records(d, report), d)
        t0 = time.perf_counter()
        run = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
                       mark_success_pattern=re.compile(SKIPPED_STEPS))
        instances = run.get_task_instances()
        tasks = {ti.task_id: str(ti.state) for ti in instances}
        result["days"][day.isoformat()] = {"state": str(run.state), "tasks": tasks,
                                           "seconds": round(time.perf_counter() - t0, 1)}
        took = {ti.task_id: round(ti.duration or 0, 1) for ti in instances if (ti.duration or 0) >= 0.5}
        print(f"{day}: {run.state} in {result['days'][day.isoformat()]['seconds']} s {tasks} seconds: {took}",
              flush=True)
    result["late_events"] = report.late_events
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
