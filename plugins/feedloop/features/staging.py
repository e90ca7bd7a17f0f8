"""The training-set build's inputs: the lake's objects copied to local disk once, then the tables built from them.

Why: the lake holds one object per Kafka partition and event hour (about 1,400 for 14 days). Read through
DuckDB's httpfs, each object costs several requests, and the build read them all seven times (five daily
aggregates, the impressions, the labels): most of its time (profiled 2026-12-05). Even from local disk DuckDB
pays milliseconds per small Parquet file and read. So the bytes are copied with concurrent GETs (no decoding),
scanned ONCE into a table, and every later step reads that table.

The tables are in memory, paged out to the build's temp folder beyond dataset.duckdb_memory_limit. Why not a
database file: writing a table to one compresses it, and that was 3-4x the CPU of the query that filled it
(measured 2026-12-05). The steps that outgrew the limit at 10M are bounded (the all-days dedup, see
_impressions) or left SQL (the windowed counts and their joins: feedloop.features.windowed_counts).

Tables left in the connection:
  ev             every event that ARRIVED before the label cutoff, with its object's event day (dt), its arrival
                 day and catalog data (dropped once the labels are built)
  catalog        item_id, topic, created_at, catalog_author_id
  daily_<name>   counts per entity key and ARRIVAL day (ingest_ts) before the window's end (the build moves them
                 into feedloop.features.windowed_counts, which sums the windows)
  imp            the window's impressions, one per (request_id, item_id) and event day
  lab            the graded label of each impression with outcomes inside the attribution window
  citem, cpos,   item embedding rows, users' positives by arrival day, and a content profile row per (user, d)
  cpair          (feedloop.features.content_profile; the vectors are in the ContentTable `stage` returns)
"""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from feedloop.core import duck
from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.features import content_profile
from feedloop.features import definitions as features

log = logging.getLogger(__name__)

DOWNLOAD_THREADS = 8   # objects copied at once: the copy waits on the network, not the CPU
COUNT_EXPR = {"impr": "event_type = 'impression'", "click": "event_type = 'click'",
              "like": "event_type = 'like'", "share": "event_type = 'share'"}


def stage(con, settings: Settings, store: ObjectStore, inputs: dict[str, str], start: date, end: date,
          folder: Path) -> content_profile.Profiles:
    """Every table the rows and the snapshot are built from (see the module docstring); copies go to `folder`.
    Returns the content profiles of every (user, impression day) and (user, end)."""
    bucket = settings.s3.lake_bucket
    end_ts = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    label_cutoff = end_ts + timedelta(minutes=settings.dataset.attribution_minutes)
    _catalog(con, store, bucket)
    embeddings = content_profile.stage_items(con, store, bucket)
    _events(con, mirror(store, bucket, list(inputs), folder), label_cutoff)
    # The copies are read: delete them while the tables are built (about a millisecond per file on this disk).
    removal = threading.Thread(target=shutil.rmtree, args=(folder,), name="remove-lake-copies")
    removal.start()
    try:
        for entity in features.ENTITIES:
            _daily(con, entity, end_ts)
        _impressions(con, start, end)
        _labels(con, settings)
        content_profile.stage_positives(con, end_ts)
        con.execute("DROP TABLE ev")  # every later step reads the smaller tables
        duck.release_memory(con)      # and the numpy steps after it need the memory ev held
        return content_profile.profiles(con, embeddings, end)
    finally:
        removal.join()


def mirror(store: ObjectStore, bucket: str, keys: list[str], folder: Path) -> list[str]:
    """The objects copied byte for byte to `folder`/<key>, concurrently; their local paths in the keys' order.

    Copied by pyarrow's S3 filesystem, whose requests run without the GIL: through boto3 the copy of 1,397 objects
    (10M impressions) held one core for 2.0-2.4 s, against 1.3 s here (measured 2026-12-07)."""
    from pyarrow import fs  # lazy: only the build copies the lake

    local = fs.LocalFileSystem()

    def copy(key: str) -> str:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fs.copy_files(f"{bucket}/{key}", str(path), source_filesystem=store.arrow_filesystem,
                      destination_filesystem=local, use_threads=False)
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
    """The one scan of the lake. dt is the object's event day (its dt= folder, read once per file as a hive
    partition: a regular expression over every row's file name was 3.8 s of 12M rows): impressions are taken
    per dt. arrival_day is the UTC day of ingest_ts, computed once for the five daily count tables."""
    con.execute(f"""
        CREATE TABLE ev AS
        SELECT e.dt, e.event_id, e.event_type, e.event_ts, e.ingest_ts, {duck.utc_day('e.ingest_ts')} AS arrival_day,
               e.request_id, e.user_id, e.item_id, e.author_id, e.tenant_id, e.surface, e.device, e.position,
               e.explore, e.model_version, e.dwell_ms, c.topic, c.created_at
        FROM read_parquet([{_sql_list(files)}], union_by_name = true, hive_partitioning = true,
                          hive_types = {{'dt': DATE, 'hour': INTEGER}}) e
        LEFT JOIN catalog c USING (item_id)
        WHERE e.ingest_ts < ?""", [label_cutoff])


def _daily(con, entity: features.Entity, end_ts: datetime) -> None:
    counts = ", ".join(f"count(*) FILTER (WHERE {COUNT_EXPR[c]}) AS {c}" for c in entity.counts)
    con.execute(f"""
        CREATE TABLE daily_{entity.name} AS
        SELECT {', '.join(entity.keys)}, arrival_day AS d, {counts}
        FROM ev
        WHERE ingest_ts < ? AND {' AND '.join(f'{k} IS NOT NULL' for k in entity.keys)}
        GROUP BY ALL""", [end_ts])


def _impressions(con, start: date, end: date) -> None:
    """The window's impressions, one per (request_id, item_id) and event day: the first by (event_ts, event_id).
    A repeat in another day's objects is another row. Why in two steps: ranking every impression of the window (a
    window function, or a grouped arg_min of the row) outgrew dataset.duckdb_memory_limit at 10M rows. So the
    repeated keys are found first by a narrow count of a 64-bit hash of the key (a hash shared by two keys only
    makes them candidates: they are ranked by the key itself), the later repeats' row ids are listed, and one
    insert leaves them out (an anti join of the strings, and a union of the two halves, took 1.2 s more at 10M)."""
    con.execute("""
        CREATE TABLE imp (request_id VARCHAR, user_id VARCHAR, item_id VARCHAR, author_id VARCHAR, topic VARCHAR,
                          tenant_id VARCHAR, surface VARCHAR, device VARCHAR, position INTEGER, explore BOOLEAN,
                          model_version VARCHAR, event_ts TIMESTAMPTZ, d DATE, request_ts DOUBLE,
                          item_created_at DOUBLE)""")
    shown = "FROM ev WHERE dt >= $start AND dt < $end AND event_type = 'impression'"
    con.execute(f"""
        CREATE TEMP TABLE repeats AS
        WITH repeated AS (SELECT hash(request_id, item_id, dt) AS h {shown} GROUP BY ALL HAVING count(*) > 1)
        SELECT rowid AS r {shown} AND hash(request_id, item_id, dt) IN (SELECT h FROM repeated)
        QUALIFY row_number() OVER (PARTITION BY request_id, item_id, dt ORDER BY event_ts, event_id) > 1""",
                {"start": start, "end": end})
    con.execute(f"""
        INSERT INTO imp
        SELECT request_id, user_id, item_id, author_id, topic, tenant_id, surface, device, position,
               coalesce(explore, false), model_version, event_ts, {duck.utc_day('event_ts')}, epoch(event_ts),
               epoch(created_at)
        {shown} AND rowid NOT IN (SELECT r FROM repeats)""", {"start": start, "end": end})
    con.execute("DROP TABLE repeats")


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
