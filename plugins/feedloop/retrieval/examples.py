"""The retrieval model's training examples: the positive (tenant, user, item, event day) pairs of a window.

Why point-in-time by arrival: a daily run at the window's end has seen only the events that had ARRIVED by
then (ingest_ts), so a backfill or a re-run must not see later arrivals either, or its recall is better than
the one the live run could have had. Why DuckDB over a pyarrow dataset: the scan reads only the five columns
and the row groups it needs (projection and filter pushdown), with no copy of the lake to local disk.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa

from feedloop.contract.lake import LAKE_SCHEMA
from feedloop.core import duck
from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.features.propensity import from_exploration
from feedloop.quality.status import label

POSITIVES_SCHEMA = pa.schema([("tenant_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
                              ("d", pa.date32())])


def positives(events, *, start: date, end: date, cutoff: datetime, event_types: tuple[str, ...]) -> pa.Table:
    """One row per (tenant, user, item, event day) with an event of `event_types` whose event day is in
    [start, end) and which arrived before `cutoff`; sorted, so the same lake gives the same table.

    `events`: anything DuckDB scans as a relation with event_type, event_ts, ingest_ts, tenant_id, user_id and
    item_id columns (a pyarrow Dataset over the lake, or a Table in tests and the bench)."""
    import duckdb  # lazy: DuckDB loads only where examples are read

    con = duckdb.connect(config={"threads": 2})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("ev", events)
        table = con.execute(f"""
            SELECT tenant_id, user_id, item_id, {duck.utc_day('event_ts')} AS d
            FROM ev
            WHERE list_contains(?::VARCHAR[], event_type) AND ingest_ts < ?
              AND event_ts >= ? AND event_ts < ?
              AND tenant_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL
            GROUP BY ALL ORDER BY ALL""", [list(event_types), cutoff, _midnight(start), _midnight(end)]
                            ).fetch_arrow_table()
    finally:
        con.close()
    return table.cast(POSITIVES_SCHEMA)


def impressions(events, *, start: date, end: date, cutoff: datetime) -> pa.Table:
    """Impressions per item (item_id, impressions) of event days [start, end) arrived before `cutoff`: with the
    positives, how often an item was engaged with when shown (its quality, as far as the logs tell)."""
    import duckdb  # lazy: DuckDB loads only where examples are read

    con = duckdb.connect(config={"threads": 2})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("ev", events)
        return con.execute("""
            SELECT item_id, count(*) AS impressions FROM ev
            WHERE event_type = 'impression' AND ingest_ts < ? AND event_ts >= ? AND event_ts < ? AND item_id IS NOT NULL
            GROUP BY ALL ORDER BY ALL""", [cutoff, _midnight(start), _midnight(end)]).fetch_arrow_table()
    finally:
        con.close()


def exposure(events, *, start: date, end: date, cutoff: datetime) -> tuple[pa.Table, pa.Table]:
    """For the exposure-weighted recall (retrieval.counterfactual), of event days [start, end) arrived before
    `cutoff`: impressions per (item_id, surface, position), and over the exploration lists only the impressions
    and clicks per (surface, position) that features.propensity.from_exploration turns into examination curves."""
    import duckdb  # lazy: DuckDB loads only where examples are read

    con = duckdb.connect(config={"threads": 2})
    window = [cutoff, _midnight(start), _midnight(end)]
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("ev", events)
        imp = """imp AS (SELECT request_id, item_id, surface, position, explore FROM ev
            WHERE event_type = 'impression' AND ingest_ts < ? AND event_ts >= ? AND event_ts < ?
              AND item_id IS NOT NULL AND position IS NOT NULL)"""
        by_position = con.execute(f"WITH {imp} SELECT item_id, surface, position, count(*) AS impressions FROM imp "
                                  "GROUP BY ALL ORDER BY ALL", window).fetch_arrow_table()
        explored = con.execute(f"""
            WITH {imp}, clk AS (SELECT DISTINCT request_id, item_id FROM ev
                         WHERE event_type = 'click' AND ingest_ts < ? AND event_ts >= ? AND event_ts < ?)
            SELECT surface, position, count(*) AS impressions, count(clk.item_id) AS clicks
            FROM imp LEFT JOIN clk USING (request_id, item_id) WHERE coalesce(explore, false)
            GROUP BY ALL ORDER BY ALL""", window + window).fetch_arrow_table()
    finally:
        con.close()
    return by_position, explored


def lake_events(settings: Settings, store: ObjectStore, *, start: date, end: date,
                excluded: Collection[str] = frozenset()):
    """A pyarrow dataset over the events objects of event days [start, end) (the lake's dt= folders), without
    those of the `excluded` hour partitions (dt=D/hour=HH: quarantined, as the ranker's training set leaves out)."""
    import pyarrow.dataset as ds

    bucket = settings.s3.lake_bucket
    keys = [f"{bucket}/{key}" for day in _days(start, end) for key in store.list_keys(bucket, lake.day_prefix(day))
            if (ref := lake.parse_key(key)) is not None and not (ref.hour and label(ref.hour) in excluded)]
    if not keys:
        return LAKE_SCHEMA.empty_table()
    return ds.dataset(keys, schema=LAKE_SCHEMA, format="parquet",   # older objects: nulls
                      filesystem=store.arrow_filesystem)


def lake_window(settings: Settings, store: ObjectStore, *, start: date, end: date,
                excluded: Collection[str] = frozenset()) -> tuple[pa.Table, pa.Table]:
    """The positives and the impressions per item of [start, end) that had arrived by the window's end, outside
    the `excluded` hour partitions."""
    events = lake_events(settings, store, start=start, end=end, excluded=excluded)
    return (positives(events, start=start, end=end, cutoff=_midnight(end),
                      event_types=settings.retrieval.positive_events),
            impressions(events, start=start, end=end, cutoff=_midnight(end)))


def lake_exposure(settings: Settings, store: ObjectStore, *, start: date, day: date,
                  excluded: Collection[str] = frozenset()) -> tuple[pa.Table, dict[str, dict[int, float]]]:
    """Day `day`'s impressions per (item, surface, position) and the examination curves from the exploration lists
    of [start, day] (surfaces with fewer than dataset.min_exploration_impressions have none)."""
    end = day + timedelta(days=1)
    events = lake_events(settings, store, start=start, end=end, excluded=excluded)
    _, explored = exposure(events, start=start, end=end, cutoff=_midnight(end))
    shown, _ = exposure(events, start=day, end=end, cutoff=_midnight(end))
    return shown, from_exploration(explored, min_impressions=settings.dataset.min_exploration_impressions)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]
