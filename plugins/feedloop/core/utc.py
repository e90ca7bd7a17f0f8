"""The instants feedloop accepts, and the UTC date-times operators type (replay ranges in the CLI and the DAG).

Why one place: event timestamps, /rank request times and replay ranges share one sane range, and the CLI,
the replay DAG's params and its task must read "2026-11-20T05:00" as the same instant (UTC, whatever the
machine's zone) and refuse the same text with the same reason. Python's datetime overflows near years 1
and 9999 (`astimezone` raises OverflowError, not ValueError), so the range is checked before converting.
Kept free of heavy imports: the CLI parses its arguments with it.
"""

from __future__ import annotations

from datetime import datetime, timezone

MIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX = datetime(2100, 1, 1, tzinfo=timezone.utc)  # exclusive
RANGE = f"between {MIN:%Y-%m-%dT%H:%M:%SZ} and {MAX:%Y-%m-%dT%H:%M:%SZ} (exclusive), in UTC"
EXAMPLE = "2026-11-20T05:00"


class TimestampError(ValueError):
    """Text that is not a date-time in range; a ValueError, so callers answer 4xx / usage errors."""


def in_range(ts: datetime) -> datetime:
    """`ts` (aware) as UTC, if it lies in [MIN, MAX); raises TimestampError otherwise, never OverflowError."""
    if MIN.year - 1 <= ts.year <= MAX.year and MIN <= (ts := ts.astimezone(timezone.utc)) < MAX:
        return ts
    raise TimestampError(f"{ts.isoformat()!r} is out of range: times must be {RANGE}")


def parse_typed(value: str) -> datetime:
    """An operator's ISO-8601 date-time (no offset means UTC, never local time) as an aware UTC datetime."""
    try:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise TimestampError(f"{value!r} is not a date-time ({exc}); expected YYYY-MM-DDTHH:MM in UTC, "
                         f"e.g. {EXAMPLE}") from None
    try:
        return in_range(ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc))
    except TimestampError:
        raise TimestampError(f"{value!r} is out of range: times must be {RANGE}") from None
