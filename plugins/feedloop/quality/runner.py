"""Validate every hour partition of a day: GX on one hour at a time, aggregates in DuckDB.

Why per hour: GX's pandas engine holds the whole batch in memory (5.2 GB RSS for 10M rows,
DESIGN.md); an hour is 1/24 of that, and hours are what ingest writes, what the quarantine
marks and what training checks. Cross-hour facts (the outcome -> impression lookback, the
trailing-days baseline) are carried as small hashed keys and stored metrics, never as rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from feedloop.config import QualityThresholds, Settings, repo_root
from feedloop.events import EVENT_TYPES, SURFACES
from feedloop.lake import LAKE_SCHEMA, HourPartition
from feedloop.quality import report
from feedloop.quality.metrics import hour_metrics, impression_keys
from feedloop.quality.partitions import IncompatibleObjects, hour_start, list_hours, previous_hours, read_hour
from feedloop.quality.status import (
    ACCEPTED, FAILED, PASSED, Acceptance, baseline_summaries, day_prefix, describe_change, hour_baseline,
    hour_prefix, label, read_status, summary_key, write_status,
)
from feedloop.quality.suites import METRICS_SUITE, ROWS_SUITE, HourScope, Unset, build_suite, instantiate, load_template
from feedloop.storage import ObjectStore

log = logging.getLogger(__name__)
_METRIC_COLUMNS = ("tenant_id", "surface", "event_type", "request_id", "item_id")


class ValidationFailed(RuntimeError):
    """At least one hour partition failed and was quarantined; the message says what and where."""

    def __init__(self, message: str, result: DayResult):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class DayResult:
    day: date
    summary: dict[str, Any]
    report_uri: str
    report_url: str

    @property
    def ok(self) -> bool:
        return self.summary["verdict"] == "passed"


@dataclass
class _Hour:
    partition: HourPartition
    state: str = PASSED
    row_count: int = 0
    objects: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # suite -> GX ExpectationSuiteValidationResult
    accepted: dict[str, str] | None = None


def validate_day(settings: Settings, day: date, *, run_id: str = "manual",
                 acceptance: Acceptance | None = None) -> DayResult:
    """Validate, record and report every hour of `day`; raises ValidationFailed if any hour failed."""
    store = ObjectStore.from_settings(settings)
    bucket = settings.s3.lake_bucket
    hours = list_hours(store, bucket, day)
    summaries = baseline_summaries(store, bucket, day, settings.quality.baseline_days)
    engine = _Engine(settings)
    lookback = _LookbackKeys(store, bucket, settings.quality.outcome_lookback_hours)
    outcomes: list[_Hour] = []
    newest = max(hours, default=None)
    for partition, keys in hours.items():
        hour = engine.validate(store, bucket, partition, list(keys), newest=partition == newest,
                               baseline=hour_baseline(summaries, partition.hour), lookback=lookback)
        _decide(store, bucket, hour, acceptance)
        outcomes.append(hour)
    return _record(settings, store, day, outcomes, run_id)


class _LookbackKeys:
    """Impression keys of recent hours, so an outcome can find an impression shortly before it."""

    def __init__(self, store: ObjectStore, bucket: str, hours: int):
        self.store, self.bucket, self.hours = store, bucket, hours
        self.keys: dict[HourPartition, pa.Table] = {}

    def before(self, partition: HourPartition) -> list[pa.Table]:
        wanted = previous_hours(partition, self.hours)
        for p in wanted:
            if p not in self.keys:
                self.keys[p] = self._read(p)
        self.keys = {p: k for p, k in self.keys.items() if p in wanted}
        return list(self.keys.values())

    def _read(self, partition: HourPartition) -> pa.Table:
        objects = list_hours(self.store, self.bucket, partition.day).get(partition, {})
        if not objects:
            return pa.table({"k": pa.array([], pa.uint64())})
        try:
            rows = read_hour(self.store, self.bucket, partition, list(objects),
                             columns=["event_type", "request_id", "item_id"])
        except (IncompatibleObjects, pa.ArrowInvalid):  # that hour fails on its own; its impressions count as unseen
            return pa.table({"k": pa.array([], pa.uint64())})
        return impression_keys(rows.table)

    def add(self, partition: HourPartition, keys: pa.Table) -> None:
        self.keys[partition] = keys


class _Engine:
    """One ephemeral GX context, the two suite templates and this deployment's thresholds."""

    def __init__(self, settings: Settings):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phone-home from workers
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.settings = settings
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = self.context.data_sources.add_pandas("engagement")
        self.batches = {
            ROWS_SUITE: source.add_dataframe_asset("hour_rows").add_batch_definition_whole_dataframe("hour"),
            METRICS_SUITE: source.add_dataframe_asset("hour_metrics").add_batch_definition_whole_dataframe("hour"),
        }
        suites_dir = repo_root() / settings.quality.suites_dir
        self.templates = {name: load_template(suites_dir, name) for name in (ROWS_SUITE, METRICS_SUITE)}

    def validate(self, store: ObjectStore, bucket: str, partition: HourPartition, keys: list[str], *,
                 newest: bool, baseline: list[dict[str, Any]], lookback: _LookbackKeys) -> _Hour:
        hour = _Hour(partition)
        try:
            data = read_hour(store, bucket, partition, keys)
        except IncompatibleObjects as exc:
            hour.failures.append({"partition": label(partition), "check": "columns", "scope": "",
                                  "expectation": "objects share one schema", "expected": str(LAKE_SCHEMA.names),
                                  "observed": str(exc)})
            return hour
        hour.objects, hour.row_count = data.objects, data.table.num_rows
        metrics = None
        if set(_METRIC_COLUMNS) <= set(data.table.column_names):
            metrics = hour_metrics(data.table, lookback.before(partition))
            lookback.add(partition, metrics.impression_keys)
            hour.metrics = metrics.summary()
        scope = self._scope(partition, newest, baseline, hour.metrics)
        frames = {ROWS_SUITE: _to_pandas(data.table)}
        if metrics is not None:
            frames[METRICS_SUITE] = metrics.table.to_pandas()
        else:
            hour.skipped.append({"check": "metrics suite", "scope": "",
                                 "reason": f"columns {', '.join(_METRIC_COLUMNS)} are not all present"})
        del data
        for name, frame in frames.items():
            instances, skipped = instantiate(self.templates[name], scope)
            hour.skipped += [{"check": s.check, "scope": s.scope, "reason": s.reason} for s in skipped]
            batch = self.batches[name].get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(build_suite(name, instances), result_format="SUMMARY")
            hour.results[name] = result
            docs = "rows" if name == ROWS_SUITE else "metrics"
            hour.failures += [report.failure(label(partition), r, docs=docs) for r in result.results if not r.success]
        return hour

    def _scope(self, partition: HourPartition, newest: bool, baseline: list[dict[str, Any]],
               current: dict[str, Any]) -> HourScope:
        s, q = self.settings, self.settings.quality
        start = hour_start(partition)
        day_end = hour_start(HourPartition(partition.day, 0)) + timedelta(days=1)

        def params(tenant: str | None, surface: str | None) -> dict[str, Any]:
            th = q.for_tenant(tenant)
            return {
                "lake_columns": list(LAKE_SCHEMA.names),
                "event_types": list(EVENT_TYPES),
                "surfaces": list(SURFACES),
                "known_tenants": list(s.events.tenants),
                "known_tenant_mostly": 1 - th.max_unknown_tenant_share,
                "window_start": start.isoformat(),
                "window_end": (start + timedelta(hours=1)).isoformat(),
                "freshness_min": (day_end - timedelta(hours=q.freshness_lag_hours)).isoformat(),
                "max_position": th.max_position,
                "max_dwell_ms": th.max_dwell_ms,
                "max_orphan_outcomes": th.max_orphan_outcomes,
                **_volume_band(tenant, th, baseline, q.min_baseline_days, partition.hour),
                **_ctr_band(tenant, surface, th, baseline, q.min_baseline_days, partition.hour, current),
            }

        return HourScope(tenants=tuple(s.events.tenants), overridden=tuple(q.tenants), surfaces=SURFACES,
                         newest_hour=newest, params=params)


def _volume_band(tenant: str | None, th: QualityThresholds, baseline: list[dict[str, Any]], min_days: int,
                 hour: int) -> dict[str, Any]:
    if len(baseline) < min_days:
        unset = Unset(f"baseline has {len(baseline)} validated day(s) of hour {hour:02d}, needs {min_days}")
        return {"rows_min": unset, "rows_max": unset}
    mean = sum(m["rows"].get(tenant or "", 0) for m in baseline) / len(baseline)
    if mean < th.volume_min_rows:
        unset = Unset(f"baseline mean {mean:.0f} rows < volume_min_rows {th.volume_min_rows}")
        return {"rows_min": unset, "rows_max": unset}
    return {"rows_min": int(mean * (1 - th.volume_band)), "rows_max": int(mean * (1 + th.volume_band)) + 1}


def _ctr_band(tenant: str | None, surface: str | None, th: QualityThresholds, baseline: list[dict[str, Any]],
              min_days: int, hour: int, current: dict[str, Any]) -> dict[str, Any]:
    pair = f"{tenant}/{surface}"
    impressions = sum(m["impressions"].get(pair, 0) for m in baseline)
    if len(baseline) < min_days:
        why = f"baseline has {len(baseline)} validated day(s) of hour {hour:02d}, needs {min_days}"
    elif impressions < th.ctr_min_impressions:
        why = f"baseline has {impressions} impressions < ctr_min_impressions {th.ctr_min_impressions}"
    elif (now := current.get("impressions", {}).get(pair, 0)) < th.ctr_min_impressions:
        why = f"{now} impressions this hour < ctr_min_impressions {th.ctr_min_impressions}"
    else:
        mean = sum(m["clicks"].get(pair, 0) for m in baseline) / impressions
        return {"ctr_min": round(mean * (1 - th.ctr_band), 6), "ctr_max": round(mean * (1 + th.ctr_band), 6)}
    return {"ctr_min": Unset(why), "ctr_max": Unset(why)}


def _to_pandas(table: pa.Table):
    """Nullable ints stay ints (GX sees int32 / int64, not float64 because of nulls)."""
    import pandas as pd

    mapping = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get, split_blocks=True)


def _decide(store: ObjectStore, bucket: str, hour: _Hour, acceptance: Acceptance | None) -> None:
    """Failed hours are quarantined unless an operator accepted exactly these objects."""
    if not hour.failures:
        hour.state = PASSED
        return
    prior = read_status(store, bucket, hour.partition)
    if acceptance and hour.partition.hour in acceptance.hours:
        hour.accepted = {"reason": acceptance.reason, "by": acceptance.by,
                         "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    elif prior and prior["state"] == ACCEPTED and not describe_change(prior["objects"], hour.objects):
        hour.accepted = prior["accepted"]
    hour.state = ACCEPTED if hour.accepted else FAILED


def _record(settings: Settings, store: ObjectStore, day: date, hours: list[_Hour], run_id: str) -> DayResult:
    """Results, Data Docs, status + quarantine per hour, then the day summary and index last."""
    bucket = settings.s3.lake_bucket
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    index_key = day_prefix(day) + "index.html"
    report_uri, report_url = store.uri(bucket, index_key), _http_url(settings, index_key)
    summary: dict[str, Any] = {"day": day.isoformat(), "run_id": run_id, "validated_at": now, "hours": {},
                               "day_failures": [], "report": report_uri}
    for hour in hours:
        prefix = hour_prefix(hour.partition)
        for name, result in hour.results.items():
            short = "rows" if name == ROWS_SUITE else "metrics"
            store.put_json(bucket, f"{prefix}{short}.json", result.to_json_dict())
            store.put(bucket, f"{prefix}{short}.html", report.data_docs(result).encode(), content_type="text/html")
        status = {"partition": label(hour.partition), "state": hour.state, "objects": hour.objects,
                  "row_count": hour.row_count, "failures": hour.failures, "skipped": hour.skipped,
                  "metrics": hour.metrics, "accepted": hour.accepted, "run_id": run_id, "validated_at": now,
                  "report": report_uri}
        write_status(store, bucket, hour.partition, status)
        summary["hours"][f"{hour.partition.hour:02d}"] = {
            **{k: status[k] for k in ("state", "row_count", "failures", "skipped", "metrics", "accepted")},
            "docs": ["rows" if n == ROWS_SUITE else "metrics" for n in hour.results],
        }
    if not hours:
        summary["day_failures"].append({
            "partition": f"dt={day.isoformat()}", "check": "freshness", "scope": "",
            "expectation": "hour partitions present", "expected": "events for the day",
            "observed": f"no objects under events/engagement/dt={day.isoformat()}/"})
    failed = summary["day_failures"] or any(h.state == FAILED for h in hours)
    summary["verdict"] = "failed" if failed else "passed"
    store.put_json(bucket, summary_key(day), summary)
    store.put(bucket, index_key, report.index_html(summary).encode(), content_type="text/html")
    log.info("validation of %s %s: report %s (%s)", day, summary["verdict"], report_uri, report_url)
    result = DayResult(day, summary, report_uri, report_url)
    if failed:
        raise ValidationFailed(report.verdict_message(summary, report_uri, report_url), result)
    return result


def _http_url(settings: Settings, key: str) -> str:
    endpoint = settings.s3.endpoint_url.rstrip("/")
    bucket = settings.s3.lake_bucket
    return f"{endpoint}/{bucket}/{key}" if endpoint else f"https://{bucket}.s3.amazonaws.com/{key}"
