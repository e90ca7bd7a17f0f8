"""Writing down a validation: each hour's GX results, Data Docs and status as soon as it is checked, the
day's summary and index page last.

Why as the hours come: recording is mostly S3 round trips (five writes an hour) and Data Docs
rendering. Written on a pool while the next hours are checked, it adds about one hour's writes to
a day's validation instead of all 24 of them after the last hour. Each hour's files are complete
on their own (status first names its objects, the quarantine marker follows it), so a validation
that stops half-way leaves correct hours behind it, and the summary, written last, only names files
that exist.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from feedloop.core.config import Settings
from feedloop.core.layout import HourPartition
from feedloop.core.storage import ObjectStore
from feedloop.quality import report
from feedloop.quality.status import FAILED, PASSED, WARNED, day_prefix, hour_prefix, label, summary_key, write_status
from feedloop.quality.suites import ROWS_SUITE

log = logging.getLogger(__name__)
WRITERS = 8  # concurrent hours being written; S3 latency, not CPU, is what they wait on


@dataclass(frozen=True)
class DayResult:
    day: date
    summary: dict[str, Any]
    report_uri: str
    report_url: str

    @property
    def ok(self) -> bool:
        """No hour quarantined (warnings allowed)."""
        return self.summary["verdict"] != "failed"

    @property
    def warned_hours(self) -> list[int]:
        return sorted(int(h) for h, v in self.summary["hours"].items() if v.get("warnings"))

    @property
    def quarantined_hours(self) -> list[int]:
        return sorted(int(h) for h, v in self.summary["hours"].items() if v["state"] == FAILED)


@dataclass
class CheckedHour:
    """One hour partition as the suites left it, and its decided state."""

    partition: HourPartition
    state: str = PASSED
    row_count: int = 0
    objects: dict[str, str] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)   # blocking: the hour is quarantined
    warnings: list[dict[str, str]] = field(default_factory=list)   # recorded and alerted; the hour trains
    skipped: list[dict[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # suite -> GX ExpectationSuiteValidationResult
    accepted: dict[str, str] | None = None
    revalidation: dict[str, Any] | None = None

    def add(self, failures: list[dict[str, Any]]) -> None:
        self.failures += [f for f in failures if f["severity"] == "block"]
        self.warnings += [f for f in failures if f["severity"] != "block"]


class DayRecorder:
    """Writes hours as they are added, then the summary (`summary`: a day's existing one to update in place,
    as a re-validation does) and the index page on finish(). Use it as a context manager: leaving it
    early waits for the hours already handed over, so none is left half-written."""

    def __init__(self, settings: Settings, store: ObjectStore, day: date, run_id: str, *,
                 summary: dict[str, Any] | None = None):
        self.store, self.bucket, self.day, self.run_id = store, settings.s3.lake_bucket, day, run_id
        self.now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.index_key = day_prefix(day) + "index.html"
        self.report_uri, self.report_url = store.uri(self.bucket, self.index_key), _http_url(settings, self.index_key)
        self.summary = summary if summary is not None else {}
        for key, value in (("day", day.isoformat()), ("run_id", run_id), ("validated_at", self.now),
                           ("hours", {}), ("day_failures", [])):
            self.summary.setdefault(key, value)
        self.summary["report"] = self.report_uri
        self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="record-hour")
        self._written: list[Future] = []

    def __enter__(self) -> DayRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def add(self, hour: CheckedHour) -> None:
        """Start writing the hour's results, Data Docs and status (+ quarantine marker)."""
        status = {"partition": label(hour.partition), "state": hour.state, "objects": hour.objects,
                  "row_count": hour.row_count, "failures": hour.failures, "warnings": hour.warnings,
                  "skipped": hour.skipped, "metrics": hour.metrics, "accepted": hour.accepted,
                  "revalidation": hour.revalidation, "run_id": self.run_id, "validated_at": self.now,
                  "report": self.report_uri}
        self.summary["hours"][f"{hour.partition.hour:02d}"] = {
            **{k: status[k] for k in ("state", "row_count", "failures", "warnings", "skipped", "metrics", "accepted",
                                      "revalidation", "validated_at")},
            "docs": [docs_name(n) for n in hour.results],
        }
        self._written.append(self._pool.submit(self._write_hour, hour, status))

    def finish(self) -> DayResult:
        """Once every hour's files exist (the first failed write raises), the summary, then the index page."""
        for job in self._written:
            job.result()
        summary = self.summary
        summary["hours"] = dict(sorted(summary["hours"].items()))
        states = [h["state"] for h in summary["hours"].values()]
        summary["verdict"] = ("failed" if summary["day_failures"] or FAILED in states
                              else "warned" if WARNED in states else "passed")
        self.store.put_json(self.bucket, summary_key(self.day), summary)
        self.store.put(self.bucket, self.index_key, report.index_html(summary).encode(), content_type="text/html")
        log.info("validation of %s %s: report %s (%s)", self.day, summary["verdict"], self.report_uri, self.report_url)
        return DayResult(self.day, summary, self.report_uri, self.report_url)

    def _write_hour(self, hour: CheckedHour, status: dict[str, Any]) -> None:
        """In order within the hour: results and their pages, then the status that names them."""
        prefix = hour_prefix(hour.partition)
        for name, result in hour.results.items():
            short = docs_name(name)
            self.store.put_json(self.bucket, f"{prefix}{short}.json", result.to_json_dict())
            self.store.put(self.bucket, f"{prefix}{short}.html", report.data_docs(result).encode(),
                           content_type="text/html")
        write_status(self.store, self.bucket, hour.partition, status)


def docs_name(suite: str) -> str:
    """The file name (rows | metrics) of a suite's results and Data Docs page in its hour's folder."""
    return "rows" if suite == ROWS_SUITE else "metrics"


def _http_url(settings: Settings, key: str) -> str:
    endpoint = settings.s3.endpoint_url.rstrip("/")
    bucket = settings.s3.lake_bucket
    return f"{endpoint}/{bucket}/{key}" if endpoint else f"https://{bucket}.s3.amazonaws.com/{key}"
