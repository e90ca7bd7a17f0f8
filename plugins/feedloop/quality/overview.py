"""Where each hour partition stands, for people: validated, warned, quarantined, force-accepted, not validated,
missing.

Why cheap reads only: the Data quality view and every report.html show many days at once. Per day
this reads the day's summary.json (every hour's state from its last validation) and ONE listing of
the day's event objects; it never opens per-hour status files or data. An hour whose objects were
written after its validation (a late event, a replay) counts as not validated again, as the
training window (quality.window) would validate it again first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from feedloop.core import layout as lake
from feedloop.quality.status import ACCEPTED, FAILED, PASSED, WARNED, day_prefix, summary_key
from feedloop.core.storage import ObjectStore

VALIDATED, WARNED_VIEW, QUARANTINED, FORCE_ACCEPTED, NOT_VALIDATED, MISSING = (
    "validated", "warned", "quarantined", "force-accepted", "not validated", "missing")
STATES = (VALIDATED, WARNED_VIEW, QUARANTINED, FORCE_ACCEPTED, NOT_VALIDATED, MISSING)
_FROM_VALIDATION = {PASSED: VALIDATED, WARNED: WARNED_VIEW, FAILED: QUARANTINED, ACCEPTED: FORCE_ACCEPTED}


@dataclass(frozen=True)
class HourStatus:
    hour: int
    state: str
    why: str = ""                                     # failed / warned checks, the acceptance reason, what changed
    rows: int | None = None
    docs: tuple[str, ...] = ()                        # Data Docs pages: "rows", "metrics" (hour=HH/<name>.html)


@dataclass(frozen=True)
class DayStatus:
    day: date
    hours: tuple[HourStatus, ...]                     # all 24, hour 0 first
    validated_at: str | None = None
    run_id: str | None = None                         # the validation run (an Airflow run id, or "manual")
    verdict: str | None = None
    day_failures: tuple[str, ...] = ()
    index_key: str | None = None                      # the day's Data Docs index page, if validated
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def validated(self) -> bool:
        return self.validated_at is not None


def day_status(store: ObjectStore, bucket: str, day: date) -> DayStatus:
    """One day's 24 hours, from its summary.json and one listing of its event objects."""
    summary: dict[str, Any] = store.get_json(bucket, summary_key(day)) or {}  # type: ignore[assignment]
    written = _hour_objects_written(store, bucket, day)
    validated_at = summary.get("validated_at")
    hours = []
    for hour in range(24):
        key = f"{hour:02d}"
        record = summary.get("hours", {}).get(key)
        newest = written.get(hour)
        hours.append(_hour(hour, record, newest, validated_at))
    counts = {state: sum(h.state == state for h in hours) for state in STATES}
    return DayStatus(
        day=day, hours=tuple(hours), validated_at=validated_at, run_id=summary.get("run_id"),
        verdict=summary.get("verdict"),
        day_failures=tuple(f"{f['check']}: {f['observed']}" for f in summary.get("day_failures", [])),
        index_key=day_prefix(day) + "index.html" if summary else None, counts=counts)


def days_status(store: ObjectStore, bucket: str, start: date, end: date) -> list[DayStatus]:
    """Every day of [start, end), oldest first."""
    return [day_status(store, bucket, start + timedelta(days=k)) for k in range((end - start).days)]


def window_status(store: ObjectStore, bucket: str, lineage: dict[str, Any]) -> list[DayStatus] | None:
    """The days of a dataset's window [window_start, window_end) (from its lineage); None if it names none."""
    start, end = lineage.get("window_start"), lineage.get("window_end")
    if not start or not end:
        return None
    return days_status(store, bucket, date.fromisoformat(start), date.fromisoformat(end))


def latest_day(store: ObjectStore, bucket: str) -> date | None:
    """The newest day that has event objects or a validation (two delimiter listings)."""
    days = [_day(p) for prefix in (lake.EVENTS_PREFIX, lake.VALIDATION_PREFIX)
            for p in _common_prefixes(store, bucket, prefix)]
    return max((d for d in days if d), default=None)


def _hour(hour: int, record: dict[str, Any] | None, newest: datetime | None, validated_at: str | None) -> HourStatus:
    if record is None:
        return HourStatus(hour, NOT_VALIDATED, "objects in the lake, never validated") if newest else \
            HourStatus(hour, MISSING, "no events in the lake for this hour")
    docs = tuple(record.get("docs", ()))
    validated_at = record.get("validated_at") or validated_at  # an hour validated again later has its own time
    if newest is None:
        return HourStatus(hour, MISSING, "validated, but its objects are gone from the lake", docs=docs)
    if validated_at and newest > datetime.fromisoformat(validated_at):
        return HourStatus(hour, NOT_VALIDATED, f"objects written at {newest.isoformat(timespec='seconds')}, after "
                                               f"the validation at {validated_at}: re-validate",
                          record.get("row_count"), docs)
    state = _FROM_VALIDATION.get(record["state"], NOT_VALIDATED)
    if state in (QUARANTINED, WARNED_VIEW):
        found = record.get("failures" if state == QUARANTINED else "warnings", [])
        why = "; ".join(sorted({f"{f['check']} ({f['expectation']}): {f['observed']}" for f in found}))
    elif state == FORCE_ACCEPTED:
        accepted = record.get("accepted") or {}
        why = f"accepted by {accepted.get('by')}: {accepted.get('reason')}"
    else:
        why = ""
    if again := record.get("revalidation"):
        why = "; ".join(filter(None, [why, f"re-validated at {again['at']} ({again['changed']}), was "
                                           f"{again['previous_state']}"]))
    return HourStatus(hour, state, why, record.get("row_count"), docs)


def _hour_objects_written(store: ObjectStore, bucket: str, day: date) -> dict[int, datetime]:
    """{hour: when its newest event object was written} for the hours of `day` that hold objects."""
    newest: dict[int, datetime] = {}
    paginator = store.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=lake.day_prefix(day)):
        for item in page.get("Contents", []):
            ref = lake.parse_key(item["Key"])
            if ref is None or ref.hour is None:
                continue
            hour = ref.hour.hour
            if hour not in newest or item["LastModified"] > newest[hour]:
                newest[hour] = item["LastModified"]
    return newest


def _common_prefixes(store: ObjectStore, bucket: str, prefix: str) -> list[str]:
    paginator = store.client.get_paginator("list_objects_v2")
    return [p["Prefix"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for p in page.get("CommonPrefixes", [])]


def _day(prefix: str) -> date | None:
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    try:
        return date.fromisoformat(name.removeprefix("dt=")) if name.startswith("dt=") else None
    except ValueError:
        return None
