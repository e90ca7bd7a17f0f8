"""The point-in-time training set for one logical date, built out of core with DuckDB.

One row per impression of the window [D - window_days, D), with graded and binary labels from
the outcomes that followed it, inverse-propensity weights, and features from
`feedloop.features.definitions` computed only from events that had ARRIVED (ingest_ts) before the start of
the impression's day. Splits: holdout = the last day, valid = the day before, train = the rest;
exploration lists (random candidates in random order) of every day go to holdout, never to training,
so no model has fit them and the gate can compare any two models on them (feedloop.training.counterfactual).
Results stream from DuckDB in record batches straight into Parquet on
S3, so memory stays bounded whatever the window holds. The same run writes the feature snapshot
"as of D" that serving pods use, and lineage (inputs, row counts, content hash).

The content hash is the sha256 of each part file's key and sha256, in order: the bytes that are uploaded. Why
not of the rows' Arrow IPC bytes: serialising and hashing the uncompressed rows again took 7 of the writer
thread's 19.5 CPU-seconds at 10M (py-spy, 2026-12-07), and the files are about a fifth of that size. A new
Parquet writer (a pyarrow upgrade) may change the hash of the same rows, as any change of the files would.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedloop.features import definitions as features
from feedloop.core import duck
from feedloop.core.ahead import ahead
from feedloop.core import layout as lake
from feedloop.features import content_profile, propensity, staging
from feedloop.features.windowed_counts import DayCounts, WindowedCounts
from feedloop.core.config import Settings
from feedloop.quality.status import label
from feedloop.core.storage import ObjectStore

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "holdout")
UPLOAD_THREADS = 4   # part files in flight to S3 while the next ones are computed
WRITES_IN_FLIGHT = 3   # batch parts queued to the writer thread (bounds the rows held in memory)
COUNT_WORKERS = 2      # entities' daily counts read and coded at once (user_author's and user_topic's, the largest)
FETCHED_AHEAD = 2      # row batches fetched and keyed on a thread of their own while the last are derived
ID_COLUMNS = ("request_id", "user_id", "item_id", "author_id", "tenant_id", "surface", "device")


class NotEnoughData(RuntimeError):
    """The window holds fewer days than dataset.min_window_days: nothing to train on yet."""


@dataclass
class DatasetResult:
    day: str                                   # D: the window is [D - window_days, D)
    uri: str                                   # s3://<lake>/datasets/ranker/<D>/
    window_start: str
    window_end: str
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    content_hash: str = ""
    propensity_method: str = ""
    input_objects: int = 0
    excluded_hours: dict[str, str] = field(default_factory=dict)  # dt=D/hour=HH -> why it was left out
    seconds: float = 0.0


def window(settings: Settings, end: date) -> tuple[date, date]:
    """[start, end) of impression days, never before retrain.start_date; refuses a too-short window."""
    start = max(end - timedelta(days=settings.dataset.window_days), settings.retrain.start_date)
    days = (end - start).days
    if days < settings.dataset.min_window_days:
        raise NotEnoughData(
            f"window {start}..{end} holds {days} day(s) of data since retrain.start_date="
            f"{settings.retrain.start_date}; training needs dataset.min_window_days={settings.dataset.min_window_days}"
        )
    return start, end


def input_start(settings: Settings, start: date) -> date:
    """The first event day a window starting at `start` reads.

    Windows count by ARRIVAL day, partitions are by EVENT day: reach back far enough for an event
    that happened up to ingest.max_lateness_hours before it arrived inside the longest window.
    """
    return start - timedelta(days=features.MAX_WINDOW + math.ceil(settings.ingest.max_lateness_hours / 24))


def build(settings: Settings, *, end: date, store: ObjectStore | None = None,
          excluded: dict[str, str] | None = None) -> DatasetResult:
    """Build datasets/ranker/<end - 1 day>/ from impressions of [end - window_days, end).

    `excluded` ({dt=D/hour=HH: why}, from quality.training_window) names hour partitions whose
    objects are left out entirely (labels, features and impressions); the lineage records them.
    """
    t0 = time.perf_counter()
    store = store or ObjectStore.from_settings(settings)
    start, end = window(settings, end)
    day = end - timedelta(days=1)
    bucket, prefix = settings.s3.lake_bucket, lake.dataset_prefix(day)
    result = DatasetResult(day.isoformat(), f"s3://{bucket}/{prefix}", start.isoformat(), end.isoformat(),
                           excluded_hours=dict(sorted((excluded or {}).items())))
    inputs = _input_objects(store, bucket, settings.kafka.topic, input_start(settings, start), end,
                            excluded=set(result.excluded_hours))
    result.input_objects = len(inputs)
    if not inputs:
        raise NotEnoughData(f"no events in s3://{bucket}/{lake.EVENTS_PREFIX} for {start}..{end}")
    with tempfile.TemporaryDirectory(prefix="feedloop-dataset-") as tmp:
        con = duck.connect(settings, memory_limit=settings.dataset.duckdb_memory_limit,
                           threads=settings.dataset.duckdb_threads, temp_dir=Path(tmp) / "duckdb")
        content = staging.stage(con, settings, store, inputs, start, end, Path(tmp) / "lake")
        curves, methods = _propensities(con, settings)
        result.propensity_method = "+".join(sorted(set(methods.values())))
        counts = _windowed_counts(con, settings.dataset.batch_rows)
        duck.set_memory_limit(con, _duckdb_share(settings.dataset.duckdb_memory_limit, counts.nbytes))
        written, rows, digest = _write_rows(con, settings, store, prefix, curves, content, counts, start, end,
                                            Path(tmp))
        result.rows, result.content_hash = rows, digest
        result.files = written + _write_snapshot(con, settings, store, prefix, counts.as_of(end), content, Path(tmp))
        con.close()
    _remove_stale(store, bucket, prefix, keep=set(result.files))
    store.put_json(bucket, prefix + "propensity.json", {"method": result.propensity_method, "methods": methods,
                                                        "curves": curves})
    result.seconds = round(time.perf_counter() - t0, 1)
    # Deterministic: lineage feeds the model version id, so a re-run of the same inputs matches.
    store.put_json(bucket, prefix + "lineage.json", {
        **{k: v for k, v in asdict(result).items() if k != "seconds"}, "inputs": inputs,
        "features": features.manifest(settings.events.tenants, objective=settings.train.objective),
        "label_grades": settings.dataset.label_grades, "attribution_minutes": settings.dataset.attribution_minutes,
    })
    return result


def _input_objects(store: ObjectStore, bucket: str, topic: str, start: date, end: date, *,
                   excluded: set[str]) -> dict[str, str]:
    """Every events object of the topic for event days [start, end] (features look back, labels ahead),
    except those of the `excluded` hour partitions (dt=D/hour=HH)."""
    found: dict[str, str] = {}
    d = start
    while d <= end:
        for key, etag in store.list_etags(bucket, lake.day_prefix(d)):
            ref = lake.parse_key(key)
            if ref and ref.topic == topic and not (ref.hour and label(ref.hour) in excluded):
                found[key] = etag
        d += timedelta(days=1)
    return dict(sorted(found.items()))


def _propensities(con, settings: Settings) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """Per surface: the exploration estimate if it has enough support, else the click model's."""
    explore = con.execute("""
        SELECT surface, position, count(*) AS impressions, count(*) FILTER (WHERE coalesce(l.label, 0) >= 1) AS clicks
        FROM imp i LEFT JOIN lab l USING (request_id, item_id) WHERE explore GROUP BY ALL""").fetch_arrow_table()
    curves = propensity.from_exploration(explore, min_impressions=settings.dataset.min_exploration_impressions)
    methods = {s: "exploration" for s in curves}
    surfaces = {r[0] for r in con.execute("SELECT DISTINCT surface FROM imp").fetchall()}
    if surfaces - set(curves):
        logs = con.execute("""
            SELECT surface, position, item_id, count(*) AS impressions,
                   count(*) FILTER (WHERE coalesce(l.label, 0) >= 1) AS clicks
            FROM imp i LEFT JOIN lab l USING (request_id, item_id) WHERE NOT list_contains(?::VARCHAR[], surface)
            GROUP BY ALL ORDER BY ALL""", [sorted(curves)]).fetch_arrow_table()  # ordered: the EM sums in row order
        for surface, curve in propensity.from_click_model(logs).items():
            curves[surface], methods[surface] = curve, "click_model"
    return curves, dict(sorted(methods.items()))


def _row_query(day: date) -> str:
    """One impression day's rows with their label and content rows (days are streamed in order, bounding memory);
    the windowed counts are added per batch (feedloop.features.windowed_counts)."""
    return f"""
        SELECT i.request_id, i.user_id, i.item_id, i.author_id, i.topic, i.tenant_id, i.surface, i.device,
               i.position, i.explore, i.model_version, i.d, i.request_ts, i.item_created_at,
               coalesce(l.label, 0) AS label, coalesce(cp.pair_row, -1) AS pair_row,
               coalesce(ci.item_row, -1) AS item_row
        FROM imp i LEFT JOIN lab l USING (request_id, item_id)
        LEFT JOIN cpair cp ON cp.user_id = i.user_id AND cp.d = i.d LEFT JOIN citem ci ON ci.item_id = i.item_id
        WHERE i.d = DATE '{day.isoformat()}'
        ORDER BY i.request_id, i.position, i.item_id"""


class _SplitFiles:
    """Parquet part files of one split: written locally (bounded size), each uploaded while the next is written."""

    def __init__(self, uploads: ThreadPoolExecutor, store: ObjectStore, bucket: str, prefix: str, split: str,
                 tmp: Path, rows_per_file: int):
        self.uploads, self.store, self.bucket, self.prefix, self.split = uploads, store, bucket, prefix, split
        self.tmp, self.rows_per_file = tmp, rows_per_file
        self.keys: list[str] = []
        self.pending: list[Future] = []
        self._writer = None
        self._rows = 0

    def write(self, part: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None or self._rows >= self.rows_per_file:
            self.close()
            self._path = self.tmp / f"{self.split}-{len(self.keys):05d}.parquet"
            self._writer = pq.ParquetWriter(self._path, part.schema, compression="zstd")
            self._rows = 0
        self._writer.write_table(part)
        self._rows += part.num_rows

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        key = f"{self.prefix}split={self.split}/part-{len(self.keys):05d}.parquet"
        self.pending.append(self.uploads.submit(_hashed_upload, self.store, self._path, self.bucket, key))
        self.keys.append(key)
        self._writer = None


def _upload(store: ObjectStore, path: Path, bucket: str, key: str) -> None:
    store.client.upload_file(str(path), bucket, key)
    path.unlink()


def _hashed_upload(store: ObjectStore, path: Path, bucket: str, key: str) -> str:
    """A part file's sha256 (the content hash is over them), then the file uploaded and deleted."""
    with path.open("rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    _upload(store, path, bucket, key)
    return sha


def _windowed_counts(con, batch_rows: int) -> WindowedCounts:
    """The daily count tables moved out of DuckDB (which no longer needs them) into WindowedCounts, batch by batch.

    Each key column's distinct ids come from the first entity keyed by it alone (user_id from daily_user; topic,
    which has none, from daily_user_topic): the pair tables' keys are subsets of them (the same events, the
    same not-null filters), and a UNION over every table held 0.7 GB more at 10M (measured)."""
    distinct = {}
    for k in sorted({k for e in features.ENTITIES for k in e.keys}):
        source = min((e for e in features.ENTITIES if k in e.keys), key=lambda e: len(e.keys))
        distinct[k] = con.execute(f"SELECT DISTINCT {k} FROM daily_{source.name}").fetch_arrow_table()[k]
    cursors = [duck.cursor(con) for _ in features.ENTITIES]   # one per entity: COUNT_WORKERS of them read at once
    try:
        return WindowedCounts(distinct, {e.name: _moved(cursor, f"daily_{e.name}", batch_rows)
                                         for e, cursor in zip(features.ENTITIES, cursors)}, workers=COUNT_WORKERS)
    finally:
        for cursor in cursors:
            cursor.close()


def _moved(con, table: str, rows: int) -> Iterator[pa.RecordBatch]:
    """The table's rows in batches, then the table dropped and its memory handed back before the next is read."""
    yield from con.execute(f"SELECT * FROM {table}").fetch_record_batch(rows)
    con.execute(f"DROP TABLE {table}")
    duck.release_memory(con)


def _duckdb_share(limit: str, held: int) -> int:
    """DuckDB's limit once the windowed counts hold `held` bytes outside it: the configured limit less those.

    Why: DuckDB refills its pool toward the limit from its spill files (the staging tables outgrow it at 10M), so
    the counts held beside it came on top: 3.44 GB peak RSS at 10M for a 2 GB limit (measured 2026-12-06). Never
    below half the limit: a day's row query needs room (less would spill it, or fail it)."""
    limit_bytes = duck.size_bytes(limit)
    return max(limit_bytes // 2, limit_bytes - held)


def _batches(con, query: str, rows: int) -> Iterator[pa.RecordBatch]:
    """The query's result in record batches, run when first iterated (a connection streams one result at a time);
    then the memory it took is handed back (the next step may be numpy's, outside DuckDB's limit)."""
    yield from con.execute(query).fetch_record_batch(rows)
    duck.release_memory(con)


def _write_rows(con, settings: Settings, store: ObjectStore, prefix: str, curves, content: content_profile.Profiles,
                counts: WindowedCounts, start: date, end: date, tmp: Path):
    """Stream the joined rows batch by batch: derive features, weights and split, write Parquet to S3."""
    cats = features.categories(settings.events.tenants)
    holdout_day, valid_day = end - timedelta(days=1), end - timedelta(days=2)
    uploads = ThreadPoolExecutor(UPLOAD_THREADS)
    outputs = {s: _SplitFiles(uploads, store, settings.s3.lake_bucket, prefix, s, tmp, settings.dataset.rows_per_file)
               for s in SPLITS}
    rows = {s: 0 for s in SPLITS}
    writer = ThreadPoolExecutor(1, thread_name_prefix="dataset-writer")   # one thread: each split's parts in order
    writes: deque[Future] = deque()
    cursor = duck.cursor(con)   # the producer thread's own connection to the same database
    fetched = ahead(_day_rows(cursor, counts, start, end, settings.dataset.batch_rows), FETCHED_AHEAD,
                    name="dataset-rows")
    try:
        for day_counts, (table, slots) in ((c, r) for c in counts.through(start, end)
                                           for r in iter(fetched.__next__, None)):
            days = table["d"].to_numpy(zero_copy_only=False)
            explore = table["explore"].to_numpy(zero_copy_only=False).astype(bool)
            split = np.where((days == np.datetime64(holdout_day)) | explore, "holdout",
                             np.where(days == np.datetime64(valid_day), "valid", "train"))
            out = _rows_out(table, day_counts.rows(slots), curves, cats, content.table, settings)
            for name in SPLITS:
                mask = split == name
                if mask.any():
                    part = out.filter(pa.array(mask))
                    writes.append(writer.submit(outputs[name].write, part))
                    rows[name] += part.num_rows
            while len(writes) > WRITES_IN_FLIGHT:
                writes.popleft().result()
    finally:
        fetched.close()
        cursor.close()
        writer.shutdown(wait=True)
        for files in outputs.values():
            files.close()
        uploads.shutdown(wait=True)
    for done in writes:
        done.result()     # a failed write fails the build
    digest = hashlib.sha256()
    for files in outputs.values():
        for key, upload in zip(files.keys, files.pending):
            digest.update(f"{key} {upload.result()}\n".encode())   # a failed upload fails the build
    return [k for files in outputs.values() for k in files.keys], rows, digest.hexdigest()


def _day_rows(con, counts: WindowedCounts, start: date, end: date,
             rows: int) -> Iterator[tuple[pa.Table, dict[str, np.ndarray]] | None]:
    """Each day's rows in batches, in order, with their windowed counts' key slots; then None for the day's end (a
    day may have no rows)."""
    for i in range((end - start).days):
        for batch in _batches(con, _row_query(start + timedelta(days=i)), rows):
            table = pa.Table.from_batches([batch])
            yield table, counts.slots(table)
        yield None


def _rows_out(table: pa.Table, counts: dict[str, np.ndarray], curves, cats, content: content_profile.ContentTable,
              settings: Settings) -> pa.Table:
    inputs = dict(counts)
    inputs.update(content.inputs(table["pair_row"].to_numpy(), table["item_row"].to_numpy()))
    inputs["request_ts"] = table["request_ts"].to_numpy(zero_copy_only=False).astype(np.float64)
    inputs["item_created_at"] = pc.fill_null(table["item_created_at"], float("nan")).to_numpy(
        zero_copy_only=False).astype(np.float64)
    for c in ("tenant_id", "surface", "device"):
        inputs[c] = table[c]  # Arrow: features.encode codes it without a Python string per row
    matrix = features.derive(inputs, cats, order="F")   # taken apart into columns below
    label = table["label"].to_numpy(zero_copy_only=False).astype(np.int32)
    position = table["position"].to_numpy(zero_copy_only=False).astype(np.int32)
    weight = propensity.weights(_objects(table["surface"]), position, label >= 1, curves,
                                max_weight=settings.dataset.max_ipw)
    cols = {c: table[c] for c in ID_COLUMNS}
    cols.update({
        "position": pa.array(position), "explore": table["explore"],
        "model_version": table["model_version"], "day": table["d"],
        "label": pa.array(label), "label_binary": pa.array((label >= 1).astype(np.int32)),
        "weight": pa.array(weight), "item_popularity": pa.array(counts["item_impr_7d"].astype(np.float32)),
    })
    for j, name in enumerate(features.FEATURE_NAMES):
        cols[features.column(name)] = pa.array(matrix[:, j])
    return pa.table(cols)


def _objects(column: pa.ChunkedArray) -> np.ndarray:
    """The column as np.asarray(column.to_pylist(), dtype=object), built from its few distinct values."""
    encoded = column.combine_chunks().dictionary_encode()
    values = np.asarray(encoded.dictionary.to_pylist() + [None], dtype=object)
    return values[pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy()]


def _write_snapshot(con, settings: Settings, store: ObjectStore, prefix: str, counts: DayCounts,
                    content: content_profile.Profiles, tmp: Path) -> list[str]:
    """Latest windowed counts per entity as of the window's end: what a pod serving this model looks up.

    Written to local files and uploaded together: DuckDB's COPY to s3:// took a round of requests per file. One
    entity's table at a time (user_author's is 9M keys at 10M impressions): the build's peak memory was here."""
    content_profile.snapshot_tables(con, content, date.fromordinal(counts.day))   # registers cuser: profiles then
    files = {}
    for e in features.ENTITIES:
        con.register("snapshot", counts.snapshot(e.name))
        query = "SELECT * FROM snapshot ORDER BY ALL"
        if e.name == "user":
            query = f"SELECT q.*, c.content_profile, c.recent_positives FROM ({query}) q " \
                    "LEFT JOIN cuser c USING (user_id) ORDER BY q.user_id"
        path = tmp / f"snapshot-{e.name}.parquet"
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
        con.unregister("snapshot")
        files[f"{prefix}snapshot/{e.name}.parquet"] = path
    content_profile.write_items(con, content, str(tmp / "snapshot-items.parquet"))
    files[f"{prefix}snapshot/items.parquet"] = tmp / "snapshot-items.parquet"
    with ThreadPoolExecutor(UPLOAD_THREADS) as uploads:
        list(uploads.map(lambda item: _upload(store, item[1], settings.s3.lake_bucket, item[0]), files.items()))
    return list(files)


def _remove_stale(store: ObjectStore, bucket: str, prefix: str, *, keep: set[str]) -> None:
    """A re-run must leave exactly its own files (a smaller rebuild must not keep old parts)."""
    for key in list(store.list_keys(bucket, prefix)):
        if key.endswith(".parquet") and key not in keep:
            store.delete(bucket, key)
