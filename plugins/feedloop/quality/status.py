"""Validation state of hour partitions in the lake: status, quarantine markers, acceptance, baselines.

validation/dt=D/hour=HH/status.json      state (passed | failed | accepted), the objects + ETags validated
validation/dt=D/hour=HH/QUARANTINE.json  present while the hour must not be trained on
validation/dt=D/summary.json             every hour's state and metrics: the baseline for later days

Why in the lake next to the data: training (another DAG, another machine) checks the same
objects it is about to read, and the record of what was validated travels with the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from feedloop.core import layout as lake
from feedloop.core.layout import HourPartition
from feedloop.core.storage import ObjectStore

PASSED, WARNED, FAILED, ACCEPTED = "passed", "warned", "failed", "accepted"
TRAINABLE = (PASSED, WARNED, ACCEPTED)


def day_prefix(day: date) -> str:
    return f"{lake.VALIDATION_PREFIX}dt={day.isoformat()}/"


def hour_prefix(partition: HourPartition) -> str:
    return f"{day_prefix(partition.day)}hour={partition.hour:02d}/"


def status_key(partition: HourPartition) -> str:
    return hour_prefix(partition) + "status.json"


def quarantine_key(partition: HourPartition) -> str:
    return hour_prefix(partition) + "QUARANTINE.json"


def summary_key(day: date) -> str:
    return day_prefix(day) + "summary.json"


def label(partition: HourPartition) -> str:
    return f"dt={partition.day.isoformat()}/hour={partition.hour:02d}"


def write_status(store: ObjectStore, bucket: str, partition: HourPartition, status: dict[str, Any]) -> None:
    """Status first, then the marker: a reader never sees 'passed' next to a stale quarantine it trusts."""
    store.put_json(bucket, status_key(partition), status)
    if status["state"] == FAILED:
        store.put_json(bucket, quarantine_key(partition), {
            "partition": label(partition), "failures": status["failures"], "run_id": status["run_id"],
            "report": status["report"], "quarantined_at": status["validated_at"],
        })
    else:
        store.delete(bucket, quarantine_key(partition))


def read_status(store: ObjectStore, bucket: str, partition: HourPartition) -> dict[str, Any] | None:
    return store.get_json(bucket, status_key(partition))  # type: ignore[return-value]


def baseline_summaries(store: ObjectStore, bucket: str, day: date, days: int) -> list[dict[str, Any]]:
    """The summaries of the `days` days before `day` that were validated (newest first)."""
    found = (store.get_json(bucket, summary_key(day - timedelta(days=k))) for k in range(1, days + 1))
    return [s for s in found if s]  # type: ignore[misc]


def hour_baseline(summaries: list[dict[str, Any]], hour: int) -> list[dict[str, Any]]:
    """Metrics of the same hour on the baseline days, only where that hour was trainable."""
    key = f"{hour:02d}"
    return [
        s["hours"][key]["metrics"]
        for s in summaries
        if key in s.get("hours", {}) and s["hours"][key]["state"] in TRAINABLE and s["hours"][key].get("metrics")
    ]


def describe_change(validated: dict[str, str], current: dict[str, str]) -> str:
    """'' when the object sets match, else which keys were added, rewritten or removed."""
    added = sorted(set(current) - set(validated))
    removed = sorted(set(validated) - set(current))
    rewritten = sorted(k for k in set(current) & set(validated) if current[k] != validated[k])
    parts = [f"{what}: {', '.join(k.rsplit('/', 1)[-1] for k in keys)}"
             for what, keys in (("new", added), ("rewritten", rewritten), ("gone", removed)) if keys]
    return "; ".join(parts)


@dataclass(frozen=True)
class Acceptance:
    """An operator's decision to train on an hour despite failed checks, and why."""

    hours: tuple[int, ...]
    reason: str
    by: str

    def __post_init__(self) -> None:
        if self.hours and not self.reason.strip():
            raise ValueError("force-accepting a partition needs a reason (param accept_reason)")
        bad = [h for h in self.hours if not 0 <= h <= 23]
        if bad:
            raise ValueError(f"accept_hours must be hours 0..23 of the logical date, got {bad}")
