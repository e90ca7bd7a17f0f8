"""The EngagementEvent contract (wire: JSON, schema_version 1): fields, allowed values, Arrow schema.

Why one module: producers (the simulator, serving pods), the ingest sink, validation and the
training-set builder must agree on every field; they all import it from here.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from feedloop.core.utc import MAX as TS_MAX
from feedloop.core.utc import MIN as TS_MIN
from feedloop.core.utc import RANGE, TimestampError, in_range

SCHEMA_VERSION = 1
SURFACES = ("feed", "search", "related", "notifications")
EVENT_TYPES = ("impression", "click", "like", "share", "dwell", "hide")
OUTCOME_TYPES = tuple(t for t in EVENT_TYPES if t != "impression")
DEVICES = ("ios", "android", "web")

REQUIRED_STRINGS = ("event_id", "tenant_id", "user_id", "item_id", "author_id", "request_id")
ENUMS = {"surface": SURFACES, "event_type": EVENT_TYPES, "device": DEVICES}

ARROW_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("author_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("dwell_ms", pa.int64()),
        pa.field("device", pa.string(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("explore", pa.bool_()),  # optional: true when the list's positions were randomly shuffled
        pa.field("model_version", pa.string()),  # optional: the model version that ranked the list (serving pods)
    ]
)
FIELDS = tuple(ARROW_SCHEMA.names)
# The decoder reads every field as nullable, so that a missing field is caught by our checks
# with a clear message instead of an opaque Arrow error, and event_ts as text, so that a
# timestamp without a timezone is refused exactly as check_event refuses it.
_DECODE_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string()) if f.name == "event_ts" else f.with_nullable(True) for f in ARROW_SCHEMA]
)
# ASCII digits only, and the same meaning in Python's re and in Arrow's RE2 (the fast path).
_TS_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
POSITION_MAX = 2**31 - 1  # the Arrow column is int32
DWELL_MS_MAX = 2**63 - 1  # int64


@dataclass(frozen=True)
class FieldError:
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class EventError(ValueError):
    """An event that breaks the contract; names every bad field and what is expected."""

    def __init__(self, errors: Sequence[FieldError]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


def format_ts(ts: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a Z, the wire format of event_ts."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_ts(value: Any) -> datetime:
    """An ISO-8601 timestamp with a timezone, as an aware UTC datetime; raises TimestampError saying why not."""
    if not isinstance(value, str):
        raise TimestampError("expected an ISO-8601 UTC timestamp string, e.g. 2026-11-20T03:04:05.123Z")
    if not re.fullmatch(_TS_PATTERN, value):
        raise TimestampError(f"{value!r} is not an ISO-8601 timestamp with a timezone, e.g. 2026-11-20T03:04:05.123Z")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimestampError(f"{value!r} is not a valid date/time, e.g. 2026-11-20T03:04:05.123Z") from None
    try:
        return in_range(ts)  # outside [TS_MIN, TS_MAX): a producer bug, and next to years 1 / 9999 an overflow
    except TimestampError:
        raise TimestampError(f"{value!r} is out of range: timestamps must be {RANGE}") from None


def check_event(obj: Any) -> list[FieldError]:
    """Every way `obj` breaks the contract (empty list = valid)."""
    if not isinstance(obj, dict):
        return [FieldError("<event>", f"expected a JSON object, got {type(obj).__name__}")]
    errors: list[FieldError] = []
    for name in REQUIRED_STRINGS:
        value = obj.get(name)
        if value is None:
            errors.append(FieldError(name, "missing (required non-empty string)"))
        elif not isinstance(value, str) or not value:
            errors.append(FieldError(name, f"expected a non-empty string, got {value!r}"))
    try:
        parse_ts(obj.get("event_ts"))
    except ValueError as exc:
        errors.append(FieldError("event_ts", "missing" if obj.get("event_ts") is None else str(exc)))
    for name, allowed in ENUMS.items():
        value = obj.get(name)
        if value not in allowed:
            got = "missing" if value is None else f"{value!r} is not allowed"
            errors.append(FieldError(name, f"{got}; expected one of {', '.join(allowed)}"))
    position = obj.get("position")
    if not _is_int(position) or not 1 <= position <= POSITION_MAX:
        errors.append(FieldError("position", f"expected an integer >= 1 and <= {POSITION_MAX} (1-based rank), "
                                             f"got {position!r}"))
    dwell = obj.get("dwell_ms")
    if dwell is not None and (not _is_int(dwell) or not 0 <= dwell <= DWELL_MS_MAX):
        errors.append(FieldError("dwell_ms", f"expected an integer >= 0 and <= {DWELL_MS_MAX}, got {dwell!r}"))
    if obj.get("event_type") == "dwell" and dwell is None:
        errors.append(FieldError("dwell_ms", "required for event_type 'dwell'"))
    query = obj.get("query")
    if query is not None and not isinstance(query, str):
        errors.append(FieldError("query", f"expected a string or null, got {query!r}"))
    explore = obj.get("explore")
    if explore is not None and not isinstance(explore, bool):
        errors.append(FieldError("explore", f"expected true, false or null, got {explore!r}"))
    model_version = obj.get("model_version")
    if model_version is not None and (not isinstance(model_version, str) or not model_version):
        errors.append(FieldError("model_version", f"expected a non-empty string or null, got {model_version!r}"))
    if not (_is_int(obj.get("schema_version")) and obj["schema_version"] == SCHEMA_VERSION):  # true == 1 in Python
        errors.append(FieldError("schema_version", f"expected {SCHEMA_VERSION}, got {obj.get('schema_version')!r}"))
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_event(raw: bytes | str) -> dict[str, Any]:
    """Decode and check one wire event; raises EventError naming each bad field."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError([FieldError("<event>", f"not valid JSON ({exc})")]) from None
    errors = check_event(obj)
    if errors:
        raise EventError(errors)
    return {name: obj.get(name) for name in FIELDS}


def to_json(event: dict[str, Any]) -> bytes:
    """Wire bytes of an event. Copied once: orjson 3.13's own bytes keep an oversized buffer
    (measured: 200k events held 1.5 GB instead of 90 MB)."""
    return bytes(memoryview(orjson.dumps(event)))


def events_to_table(events: Sequence[dict[str, Any]]) -> pa.Table:
    """Checked event dicts (wire form) to an Arrow table with the contract schema."""
    columns = {name: [e.get(name) for e in events] for name in FIELDS}
    columns["event_ts"] = [parse_ts(v) for v in columns["event_ts"]]
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str


@dataclass(frozen=True)
class DecodedBatch:
    table: pa.Table           # the valid events, in input order, with ARROW_SCHEMA
    kept: pa.Array            # int64 indices (into the input) of the rows in `table`
    rejected: list[Rejected]  # the invalid ones, with why


def decode_batch(raws: Sequence[bytes], *, joined: bytes | None = None) -> DecodedBatch:
    """Decode many wire events at once; bad ones are returned with their reason, never raised.

    Fast path: one vectorized pyarrow JSON read of the whole block plus vectorized checks.
    A block the fast path cannot read (a record that is not JSON, a mistyped field) falls
    back to per-record parsing, so one bad record costs its own block speed, not the run.
    The per-record path has the last word and never raises: a record that cannot be decoded,
    whatever the exception, is rejected with its reason, so no record can stop the sink.
    `joined`: b"\n".join(raws), when the caller has it already.
    """
    if not raws:
        return DecodedBatch(ARROW_SCHEMA.empty_table(), pa.array([], pa.int64()), [])
    try:
        fast = _decode_block(raws, b"\n".join(raws) if joined is None else joined)
    except Exception:  # noqa: BLE001 - whatever trips the fast path, the per-record path decides each record
        fast = None
    return fast if fast is not None else _decode_per_record(raws)


def _decode_block(raws: Sequence[bytes], block: bytes) -> DecodedBatch | None:
    """The vectorized decode, or None when the block needs the per-record path."""
    table = _read_block(block, len(raws))
    if table is None:
        return None
    bad = _invalid_rows(table)
    keep = pc.invert(bad)
    try:
        valid = _to_contract(table.filter(keep) if pc.any(bad).as_py() else table)
    except pa.ArrowInvalid:  # a well-formed but impossible date, e.g. month 13
        return None
    if valid.num_rows and not _in_ts_range(valid["event_ts"]):
        return None  # rare: the per-record path names the record and its timestamp
    kept = pc.indices_nonzero(keep).cast(pa.int64())
    rejected = [Rejected(i, _reason(raws[i])) for i in pc.indices_nonzero(bad).to_pylist()]
    if not all(r.reason for r in rejected):
        return None  # the vectorized and the per-record checks disagree: the per-record one decides
    return DecodedBatch(valid, kept, rejected)


def _reason(raw: bytes) -> str:
    return "; ".join(str(e) for e in check_event(orjson.loads(raw)))


def _in_ts_range(ts: pa.ChunkedArray) -> bool:
    low, high = pc.min_max(ts).values()
    return TS_MIN <= low.as_py() and high.as_py() < TS_MAX


def _to_contract(table: pa.Table) -> pa.Table:
    ts = table["event_ts"].cast(pa.timestamp("ms", tz="UTC"))
    return table.set_column(table.schema.get_field_index("event_ts"), "event_ts", ts).cast(ARROW_SCHEMA)


def _read_block(block: bytes, records: int) -> pa.Table | None:
    import pyarrow.json as pj

    # Arrow's reader gets only what it handles safely, else the per-record path reads the block: one
    # line per record (a newline inside a record, e.g. pretty-printed JSON, breaks the framing), each
    # line starting like a JSON object (a top-level `null` first in a block crashes the process with a
    # segfault in pyarrow 26, apache/arrow#47409), and valid UTF-8 (Arrow does not check it in
    # strings, orjson does).
    if not _one_object_line_per_record(block, records):
        return None
    if not block.isascii():  # ASCII (the usual block) is valid UTF-8, and checking that is a third of decoding
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        table = pj.read_json(
            io.BytesIO(block),
            read_options=pj.ReadOptions(block_size=1 << 26, use_threads=False),
            parse_options=pj.ParseOptions(explicit_schema=_DECODE_SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == records else None


def _one_object_line_per_record(block: bytes, records: int) -> bool:
    """Exactly one line per record, each starting with '{' (numpy: a quarter of bytes.count's time)."""
    if b"\r" in block or not block.startswith(b"{"):  # a carriage return is a line break to Arrow too
        return False
    data = np.frombuffer(block, np.uint8)
    starts = np.flatnonzero(data == ord("\n")) + 1  # where each following line starts
    return len(starts) == records - 1 and (
        starts.size == 0 or (starts[-1] < len(data) and bool(np.all(data[starts] == ord("{")))))


def _invalid_rows(table: pa.Table) -> pa.ChunkedArray:
    """Vectorized twin of check_event for a table decoded with the contract schema."""
    bad = pc.invert(pc.fill_null(pc.match_substring_regex(table["event_ts"], _TS_PATTERN), False))
    for name in REQUIRED_STRINGS:
        col = table[name]
        bad = pc.or_kleene(bad, pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_length(col), 0)))
    for name, allowed in ENUMS.items():
        bad = pc.or_kleene(bad, pc.invert(pc.fill_null(pc.is_in(table[name], pa.array(allowed)), False)))
    bad = pc.or_kleene(bad, pc.fill_null(pc.less(table["position"], 1), True))
    bad = pc.or_kleene(bad, pc.fill_null(pc.less(table["dwell_ms"], 0), False))
    bad = pc.or_kleene(bad, pc.fill_null(pc.equal(pc.utf8_length(table["model_version"]), 0), False))
    dwell_missing = pc.and_(pc.equal(table["event_type"], "dwell"), pc.is_null(table["dwell_ms"]))
    bad = pc.or_kleene(bad, pc.fill_null(dwell_missing, False))
    bad = pc.or_kleene(bad, pc.fill_null(pc.not_equal(table["schema_version"], SCHEMA_VERSION), True))
    return pc.fill_null(bad, True)


def _decode_per_record(raws: Sequence[bytes]) -> DecodedBatch:
    good: list[dict[str, Any]] = []
    kept: list[int] = []
    rejected: list[Rejected] = []
    for i, raw in enumerate(raws):
        try:
            good.append(parse_event(raw))
            kept.append(i)
        except EventError as exc:
            rejected.append(Rejected(i, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one record must never stop its block (a poison pill)
            rejected.append(Rejected(i, f"<event>: could not be decoded ({type(exc).__name__}: {exc})"))
    try:
        table = events_to_table(good)
    except Exception:  # noqa: BLE001 - check_event let through a value Arrow refuses: find it, keep the rest
        return _table_row_by_row(good, kept, rejected)
    return DecodedBatch(table, pa.array(kept, pa.int64()), rejected)


def _table_row_by_row(good: list[dict[str, Any]], kept: list[int], rejected: list[Rejected]) -> DecodedBatch:
    tables, still_kept = [], []
    for event, i in zip(good, kept):
        try:
            tables.append(events_to_table([event]))
            still_kept.append(i)
        except Exception as exc:  # noqa: BLE001 - the same guarantee as above: rejected, never raised
            rejected.append(Rejected(i, f"<event>: does not fit the event schema ({type(exc).__name__}: {exc})"))
    table = pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()
    return DecodedBatch(table, pa.array(still_kept, pa.int64()), sorted(rejected, key=lambda r: r.index))
