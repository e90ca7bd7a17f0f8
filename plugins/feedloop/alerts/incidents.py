"""Incident records: one per DAG + task + day, kept in s3://<lake>/_alerts/incidents/<dag>/<task>/dt=<day>.json.

Why state in S3: alerts fire from task callbacks on any worker; whether a failure is NEW (post to
Slack and email) or a REPEAT of an open incident (update the record only) must be decided by one
writer. Every transition is a conditional put on the ETag read before (If-None-Match for the first
record), so two workers failing at once open exactly one incident and exactly one of them posts.

open ──failure within incident_window_hours of last_seen──► open (count + 1, last_seen, runs)
open ──failure after the window, or after resolved──────► a NEW incident (posted again)
open ──the same task succeeds for the same day───────────► resolved (one "resolved" message)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable

from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore, PreconditionFailed

PREFIX = "_alerts/incidents/"
OPEN, RESOLVED = "open", "resolved"
CHANNELS = ("slack", "email")
KEPT_RUNS = 20  # run ids remembered per incident (the newest)
_CAS_TRIES = 8


@dataclass(frozen=True)
class Transition:
    """What a failure did to the incident record."""

    record: dict[str, Any]
    new: bool  # a new incident: post it


def key(dag_id: str, check: str, partition: str) -> str:
    return f"{PREFIX}{dag_id}/{check}/{partition}.json"


def is_repeat(record: dict[str, Any] | None, now: datetime, window: timedelta) -> bool:
    """A failure repeats the incident iff it is still open and was last seen within the window."""
    return (record is not None and record["state"] == OPEN
            and now - datetime.fromisoformat(record["last_seen"]) <= window)


def opened(content: dict[str, Any], *, now: datetime, run_id: str) -> dict[str, Any]:
    """A new open incident; `content` is what the alert says (kind, headline, details, links, actions)."""
    at = _iso(now)
    return {**content, "state": OPEN, "id": f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}", "opened_at": at,
            "last_seen": at, "count": 1, "runs": [run_id], "delivered": {c: None for c in CHANNELS},
            "errors": {}, "resolved_at": None, "resolution": None}


def repeated(record: dict[str, Any], content: dict[str, Any], *, now: datetime, run_id: str) -> dict[str, Any]:
    """The open incident seen again: the latest content, count + 1, last_seen; nothing is posted."""
    runs = [r for r in record["runs"] if r != run_id] + [run_id]
    return {**record, **content, "last_seen": _iso(now), "count": record["count"] + 1, "runs": runs[-KEPT_RUNS:]}


def resolved(record: dict[str, Any], *, now: datetime, resolution: dict[str, Any]) -> dict[str, Any]:
    """resolution: {"text", "run_id", "run_url"} of the success that closed it."""
    return {**record, "state": RESOLVED, "resolved_at": _iso(now), "resolution": resolution}


class IncidentStore:
    """The incident records of one lake bucket; every write is a compare-and-swap."""

    def __init__(self, store: ObjectStore, bucket: str, *, window: timedelta):
        self.store, self.bucket, self.window = store, bucket, window

    @classmethod
    def from_settings(cls, settings: Settings) -> IncidentStore:
        return cls(ObjectStore.from_settings(settings), settings.s3.lake_bucket,
                   window=timedelta(hours=settings.alerts.incident_window_hours))

    def uri(self, record_key: str) -> str:
        return self.store.uri(self.bucket, record_key)

    def get(self, record_key: str) -> dict[str, Any] | None:
        return self.store.get_json(self.bucket, record_key)  # type: ignore[return-value]

    def fail(self, record_key: str, content: dict[str, Any], *, now: datetime, run_id: str) -> Transition:
        """Open a new incident, or update the open one; exactly one concurrent caller gets new=True."""

        def change(record: dict[str, Any] | None) -> dict[str, Any]:
            if is_repeat(record, now, self.window):
                return repeated(record, content, now=now, run_id=run_id)  # type: ignore[arg-type]
            return opened({**content, "key": record_key}, now=now, run_id=run_id)

        before, after = self._swap(record_key, change)
        return Transition(after, before is None or before["id"] != after["id"])  # type: ignore[index]

    def resolve(self, record_key: str, *, now: datetime, resolution: dict[str, Any]) -> dict[str, Any] | None:
        """Mark the open incident resolved; None if there is none (only one concurrent caller gets it)."""
        return self._swap(record_key, lambda r: resolved(r, now=now, resolution=resolution)
                          if r is not None and r["state"] == OPEN else None)[1]

    def delivered(self, record_key: str, incident_id: str, errors: dict[str, str | None], *,
                  now: datetime) -> None:
        """Record the channels that took the opening message (errors: channel -> None if delivered, else why)."""

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            if record is None or record["id"] != incident_id:
                return None  # resolved or replaced meanwhile: nothing to record
            done = {**record["delivered"], **{c: _iso(now) for c, e in errors.items() if e is None}}
            return {**record, "delivered": done, "errors": {c: e for c, e in errors.items() if e is not None}}

        self._swap(record_key, change)

    def failing_days(self, dag_id: str, check: str, day: date, *, limit: int = 30) -> int:
        """Consecutive days up to `day` (counted as 1) that have an incident of this DAG + task."""
        days = 1
        while days < limit and self.get(key(dag_id, check, f"dt={(day - timedelta(days=days)).isoformat()}")):
            days += 1
        return days

    def _swap(self, record_key: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Read, change, conditional put (re-read and retry when another writer won); (before, after)."""
        import orjson

        for _ in range(_CAS_TRIES):
            found = self.store.get(self.bucket, record_key)
            before = None if found is None else orjson.loads(found.body)
            after = change(before)
            if after is None:
                return before, None
            try:
                if found is None:
                    self.store.put_json(self.bucket, record_key, after, if_none_match=True)
                else:
                    self.store.put_json(self.bucket, record_key, after, if_match=found.etag)
            except PreconditionFailed:
                continue
            return before, after
        raise RuntimeError(f"{self.uri(record_key)}: gave up after {_CAS_TRIES} concurrent updates")


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")
