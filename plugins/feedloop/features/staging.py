"""The training-set build's inputs: the lake's objects copied to local disk once, then the tables built from them.

Why: the lake holds one object per Kafka partition and event hour (about 1,400 for 14 days). Read through
DuckDB's httpfs, each object costs several requests, and the build read them all seven times (five daily
aggregates, the impressions, the labels): most of its time (profiled 2026-12-05). Even from local disk DuckDB
pays milliseconds per small Parquet file and read. So the bytes are copied with concurrent GETs (no decoding),
scanned ONCE into a table of a DuckDB database file in the build's temp folder (so tables can leave
memory under dataset.duckdb_memory_limit; in memory they could not, and 10M ran out), and every
later step reads that table.

Tables left in the connection:
  ev             every event that ARRIVED before the label cutoff, with its object's event day (dt) and catalog
                 data (dropped once the labels are built)
  catalog        item_id, topic, created_at, catalog_author_id
  daily_<name>   counts per entity key and ARRIVAL day (ingest_ts) before the window's end
  imp            the window's impressions, one per (request_id, item_id) and event day
  lab            the graded label of each impression with outcomes inside the attribution window
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.features import definitions as features

log = logging.getLogger(__name__)

DOWNLOAD_THREADS = 8   # GETs in flight (botocore pools 10 connections): the copy waits on the network, not the CPU
COUNT_EXPR = {"impr": "event_type = 'impression'", "click": "event_type = 'click'",
              "like": "event_type = 'like'", "share": "event_type = 'share'"}


def stage(con, settings: Settings, store: ObjectStore, inputs: dict[str, str], start: date, end: date,
          folder: Path) -> None:
    """Every table the rows and the snapshot are built from (see the module docstring); copies go to `folder`."""
    bucket = settings.s3.lake_bucket
    end_ts = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    label_cutoff = end_ts + timedelta(minutes=settings.dataset.attribution_minutes)
    _catalog(con, store, bucket)
    _events(con, mirror(store, bucket, list(inputs), folder), label_cutoff)
    for entity in features.ENTITIES:
        _daily(con, entity, end_ts)
    _impressions(con, start, end)
    _labels(con, settings)
    con.execute("DROP TABLE ev")  # every later step reads the smaller tables; free its memory for the joins


def snapshot_sums(entity: features.Entity, as_of: str) -> str:
    """Windowed counts per key over arrival days [as_of - w, as_of): SQL shared by training and serving."""
    return ", ".join(
        f"coalesce(sum(x.{c}) FILTER (WHERE x.d >= {as_of} - {w}), 0)::DOUBLE AS {features.count_column(entity.name, c, w)}"
        for w in entity.windows for c in entity.counts)


def mirror(store: ObjectStore, bucket: str, keys: list[str], folder: Path) -> list[str]:
    """The objects copied byte for byte to `folder`/<key>, concurrently; their local paths in the keys' order."""
    def copy(key: str) -> str:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
        with path.open("wb") as out:
            shutil.copyfileobj(body, out, length=1 << 20)
        return str(path)

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        return list(pool.map(copy, keys))


def _catalog(con, store: ObjectStore, bucket: str) -> None:
    if store.get(bucket, lake.CATALOG_ITEMS_KEY) is not None:
        source = f"s3://{bucket}/{lake.CATALOG_ITEMS_KEY}"
        names = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [source]).fetchall()}
        author = "author_id" if "author_id" in names else "NULL::VARCHAR"  # lets a pod fill a missing author
        con.execute(f"CREATE TABLE catalog AS SELECT item_id, topic, created_at, {author} AS catalog_author_id "
                    "FROM read_parquet(?)", [source])
    else:
        log.warning("no item catalog at s3://%s/%s: topic and item-age features are unknown", bucket,
                    lake.CATALOG_ITEMS_KEY)
        con.execute("CREATE TABLE catalog (item_id VARCHAR, topic VARCHAR, created_at TIMESTAMPTZ, "
                    "catalog_author_id VARCHAR)")


def _events(con, files: list[str], label_cutoff: datetime) -> None:
    """The one scan of the lake. dt is the object's event day (its dt= folder): impressions are taken per dt."""
    con.execute(f"""
        CREATE TABLE ev AS
        SELECT CAST(regexp_extract(e.filename, '/dt=([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})/', 1) AS DATE) AS dt,
               e.event_id, e.event_type, e.event_ts, e.ingest_ts, e.request_id, e.user_id, e.item_id, e.author_id,
               e.tenant_id, e.surface, e.device, e.position, e.explore, e.model_version, e.dwell_ms,
               c.topic, c.created_at
        FROM read_parquet([{_sql_list(files)}], union_by_name = true, filename = true) e
        LEFT JOIN catalog c USING (item_id)
        WHERE e.ingest_ts < ?""", [label_cutoff])


def _daily(con, entity: features.Entity, end_ts: datetime) -> None:
    counts = ", ".join(f"count(*) FILTER (WHERE {COUNT_EXPR[c]}) AS {c}" for c in entity.counts)
    con.execute(f"""
        CREATE TABLE daily_{entity.name} AS
        SELECT {', '.join(entity.keys)}, CAST(ingest_ts AS DATE) AS d, {counts}
        FROM ev
        WHERE ingest_ts < ? AND {' AND '.join(f'{k} IS NOT NULL' for k in entity.keys)}
        GROUP BY ALL""", [end_ts])


def _impressions(con, start: date, end: date) -> None:
    """The window's impressions, one per (request_id, item_id) and event day: the first by (event_ts, event_id).
    One event day at a time: deduplicating the whole window at once (a window function, or a grouped arg_min
    of the row) outgrew dataset.duckdb_memory_limit at 10M rows. A repeat in another day's objects is another row."""
    con.execute("""
        CREATE TABLE imp (request_id VARCHAR, user_id VARCHAR, item_id VARCHAR, author_id VARCHAR, topic VARCHAR,
                          tenant_id VARCHAR, surface VARCHAR, device VARCHAR, position INTEGER, explore BOOLEAN,
                          model_version VARCHAR, event_ts TIMESTAMPTZ, d DATE, request_ts DOUBLE, item_created_at DOUBLE)""")
    for i in range((end - start).days):
        con.execute("""
            INSERT INTO imp
            SELECT request_id, user_id, item_id, author_id, topic, tenant_id, surface, device, position,
                   coalesce(explore, false), model_version, event_ts, CAST(event_ts AS DATE), epoch(event_ts),
                   epoch(created_at)
            FROM ev WHERE dt = ? AND event_type = 'impression'
            QUALIFY row_number() OVER (PARTITION BY request_id, item_id ORDER BY event_ts, event_id) = 1""",
                    [start + timedelta(days=i)])


def _labels(con, settings: Settings) -> None:
    cfg, g = settings.dataset, settings.dataset.label_grades
    con.execute(f"""
        CREATE TABLE lab AS
        SELECT i.request_id, i.item_id, max(CASE o.event_type
                 WHEN 'share' THEN {g.get('share', 3)}
                 WHEN 'like' THEN {g.get('like', 2)}
                 WHEN 'dwell' THEN CASE WHEN o.dwell_ms >= {cfg.long_dwell_ms} THEN {g.get('long_dwell', 2)}
                                        ELSE {g.get('click', 1)} END
                 WHEN 'click' THEN {g.get('click', 1)}
                 ELSE 0 END) AS label
        FROM imp i JOIN ev o ON o.request_id = i.request_id AND o.item_id = i.item_id
         AND o.event_type <> 'impression' AND o.event_ts >= i.event_ts
         AND o.event_ts < i.event_ts + INTERVAL {cfg.attribution_minutes} MINUTE
        GROUP BY ALL""")


def _sql_list(files: list[str]) -> str:
    return ", ".join("'" + f.replace("'", "''") + "'" for f in files)
