"""Which hours of a training window may be trained on, by the deployment's policy for quarantined data.

Why a policy and not "all clean or nothing": one broken hour must not stop every training window
that contains it for weeks. With `dataset.on_quarantined: exclude` (the default) quarantined hours
are left out of the training set and named; the window is refused only when fewer than
`dataset.min_clean_share` of its hours with data are clean. With `refuse`, any quarantined hour
refuses the window until it is fixed or accepted. Hours whose objects changed since their
validation (a late event, a replay) or that were never validated are validated again here, by
the run that needs them, with no operator step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from feedloop.core import layout as lake
from feedloop.core.config import Settings
from feedloop.core.layout import HourPartition
from feedloop.quality.partitions import hour_start, list_hours
from feedloop.quality.runner import revalidate
from feedloop.quality.status import (
    TRAINABLE, day_prefix, describe_change, label, quarantine_key, read_status,
)
from feedloop.core.storage import ObjectStore

log = logging.getLogger(__name__)
_QUARANTINE_FILE = quarantine_key(HourPartition(date(2000, 1, 1), 0)).rsplit("/", 1)[-1]


class WindowNotReady(RuntimeError):
    """A training window that the policy refuses: the message names every hour that is not clean, and why."""

    def __init__(self, problems: dict[str, str], headline: str):
        self.problems = problems
        lines = "\n".join(f"  {part}: {why}" for part, why in problems.items())
        super().__init__(f"refusing the training window: {headline}\n{lines}")


@dataclass(frozen=True)
class TrainingWindow:
    """The window's clean hours, and every hour left out of the training set with the reason."""

    clean: list[HourPartition]
    excluded: dict[str, str] = field(default_factory=dict)      # dt=D/hour=HH -> why (in the window)
    revalidated: dict[str, str] = field(default_factory=dict)   # dt=D/hour=HH -> state after validating again

    @property
    def clean_share(self) -> float:
        total = len(self.clean) + len(self.excluded)
        return len(self.clean) / total if total else 1.0


def training_window(settings: Settings, start: datetime, end: datetime, *, run_id: str) -> TrainingWindow:
    """The hour partitions of [start, end) to train on; raises WindowNotReady when the policy refuses.

    A day of the window with no partitions at all is always refused (an outage, not unusual data).
    """
    store, bucket = ObjectStore.from_settings(settings), settings.s3.lake_bucket
    hours = _window_hours(store, bucket, start, end)
    missing = {f"dt={d.isoformat()}": "no partitions in the lake" for d, found in hours.items() if not found}
    objects = {p: objs for found in hours.values() for p, objs in found.items()}
    stale = [p for p, objs in objects.items() if _stale(store, bucket, p, objs)]
    revalidated = {label(p): state for p, state in revalidate(settings, stale, run_id=run_id).items()} if stale \
        else {}
    problems = {label(p): why for p, objs in objects.items() if (why := _problem(store, bucket, p, objs))}
    window = TrainingWindow(clean=sorted(p for p in objects if label(p) not in problems), excluded=problems,
                            revalidated=revalidated)
    cfg = settings.dataset
    if missing:
        raise WindowNotReady(missing | problems, f"{len(missing)} day(s) without data")
    if problems and cfg.on_quarantined == "refuse":
        raise WindowNotReady(problems, f"{len(problems)} partition(s) not validated clean "
                                       "(dataset.on_quarantined: refuse)")
    if window.clean_share < cfg.min_clean_share:
        raise WindowNotReady(problems, f"only {len(window.clean)} of {len(objects)} hours with data are clean "
                                       f"({window.clean_share:.0%} < dataset.min_clean_share "
                                       f"{cfg.min_clean_share:.0%})")
    for part, why in problems.items():
        log.warning("left out of training: %s: %s", part, why)
    return window


def quarantined_hours(settings: Settings, start: date, end: date) -> dict[str, str]:
    """{dt=D/hour=HH: failed checks} of the quarantined hours of days [start, end): the feature lookback
    before a window reads those days too, and leaves their broken hours out as well."""
    store, bucket = ObjectStore.from_settings(settings), settings.s3.lake_bucket
    found: dict[str, str] = {}
    day = start
    while day < end:
        for key in store.list_keys(bucket, day_prefix(day)):
            if key.endswith("/" + _QUARANTINE_FILE):
                marker = store.get_json(bucket, key) or {}
                checks = sorted({f["check"] for f in marker.get("failures", [])})  # type: ignore[union-attr]
                found[key.removeprefix(lake.VALIDATION_PREFIX).rsplit("/", 1)[0]] = \
                    f"quarantined ({', '.join(checks)})"
        day += timedelta(days=1)
    return found


def _window_hours(store: ObjectStore, bucket: str, start: datetime, end: datetime
                  ) -> dict[date, dict[HourPartition, dict[str, str]]]:
    found = {}
    day = start.date()
    while datetime(day.year, day.month, day.day, tzinfo=start.tzinfo) < end:
        found[day] = {p: objs for p, objs in list_hours(store, bucket, day).items() if start <= hour_start(p) < end}
        day += timedelta(days=1)
    return found


def _stale(store: ObjectStore, bucket: str, partition: HourPartition, objects: dict[str, str]) -> bool:
    """Never validated, or its objects changed since: validate it again before deciding."""
    status = read_status(store, bucket, partition)
    return status is None or bool(describe_change(status["objects"], objects))


def _problem(store: ObjectStore, bucket: str, partition: HourPartition, objects: dict[str, str]) -> str | None:
    marker = store.get_json(bucket, quarantine_key(partition))
    if marker:
        checks = sorted({f["check"] for f in marker.get("failures", [])})  # type: ignore[union-attr]
        return f"quarantined ({', '.join(checks)}); report {marker.get('report')}"  # type: ignore[union-attr]
    status = read_status(store, bucket, partition)
    if status is None:
        return "never validated"
    if status["state"] not in TRAINABLE:
        return f"validation state is {status['state']}"
    changed = describe_change(status["objects"], objects)
    return f"objects changed since validation ({changed}); re-validate" if changed else None
