"""Impression lists: one Kafka record per served list, which the ingest sink expands into impression events.

Why: a pod shows hundreds of items a request, and producing each as its own EngagementEvent cost
the pod about as much CPU as ranking (bench/serve.py: 7 ms a 500-item list). A list record holds
what the events would repeat once, and the items in display order; the sink expands it into exactly
the events a pod used to send (event_id `<request_id>-p<position:03d>-impression`, position = index + 1),
so the lake, validation and training see the same rows either way. Plain events keep working: a
producer may send either.

Wire (JSON, one line): {"record_type": "impression_list", "schema_version", "request_id", "event_ts",
"tenant_id", "user_id", "surface", "device", "query", "explore", "model_version", "items": [item_id, ...],
"authors": [author_id, ...]}, plus "retriever_version" on a list whose candidates the pod retrieved (POST
/recommend; optional, absent on /rank lists: readers ignore it, and the lake has no column for it yet). A list
breaking the contract is dead-lettered whole, with the reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson
import pyarrow as pa

from feedloop.contract.events import (ARROW_SCHEMA, POSITION_MAX, SCHEMA_VERSION, DecodedBatch, Rejected, check_event,
                                      decode_batch, parse_ts)

RECORD_TYPE = "impression_list"
MARKER = b'"record_type"'  # bytes every list record holds; a plain event holds it only with an extra field
RETRIEVER_KEY = '"retriever_version":,'  # the optional key as it appears in a record (for size estimates)
SHARED = ("request_id", "event_ts", "tenant_id", "user_id", "surface", "device", "query", "explore", "model_version",
          "schema_version")


def event_id(request_id: str, position: int) -> str:
    """The impression's id, shared with the simulator's scheme: outcomes name the impression they follow."""
    return f"{request_id}-p{position:03d}-impression"


def encode(*, request_id: str, event_ts: str, tenant_id: str, user_id: str, surface: str, device: str,
           query: str | None, explore: bool, model_version: str | None, item_ids: Sequence[str],
           author_ids: Sequence[str | None], retriever_version: str | None = None) -> bytes:
    """One list's wire record (authors unknown to the pod as "unknown", as in its impression events)."""
    record = {"record_type": RECORD_TYPE, "schema_version": SCHEMA_VERSION, "request_id": request_id,
              "event_ts": event_ts, "tenant_id": tenant_id, "user_id": user_id, "surface": surface,
              "device": device, "query": query, "explore": explore, "model_version": model_version,
              "items": list(item_ids), "authors": [a or "unknown" for a in author_ids]}
    if retriever_version is not None:
        record["retriever_version"] = retriever_version
    return orjson.dumps(record)


def parse(raw: bytes) -> dict[str, Any] | None:
    """The record as a list record, or None when it is not one (a plain event, or not JSON at all)."""
    if MARKER not in raw:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and obj.get("record_type") == RECORD_TYPE else None


def problems(obj: dict[str, Any]) -> str:
    """Why a list record breaks the contract ("" = it does not): its items, then its first event's fields."""
    items, authors = obj.get("items"), obj.get("authors")
    if not isinstance(items, list) or not items:
        return "items: expected a non-empty list of item ids"
    if len(items) > POSITION_MAX:
        return f"items: {len(items)} items; at most {POSITION_MAX}"
    if not isinstance(authors, list) or len(authors) != len(items):
        return f"authors: expected a list of {len(items)} author ids, one per item"
    for name, values in (("items", items), ("authors", authors)):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str) or not v), None)
        if bad is not None:
            return f"{name}[{bad}]: expected a non-empty string, got {values[bad]!r}"
    first = {**{k: obj.get(k) for k in SHARED}, "event_id": event_id(str(obj.get("request_id")), 1),
             "event_type": "impression", "item_id": items[0], "author_id": authors[0], "position": 1}
    return "; ".join(str(e) for e in check_event(first))


def to_events(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """A valid list record as its impression events (wire form): what a Python consumer of the topic reads."""
    base = {k: obj.get(k) for k in SHARED}
    return [{**base, "event_id": event_id(obj["request_id"], p), "event_type": "impression", "item_id": item,
             "author_id": author, "position": p, "dwell_ms": None}
            for p, (item, author) in enumerate(zip(obj["items"], obj["authors"]), start=1)]


def events_in(raw: bytes) -> list[dict[str, Any]]:
    """A topic record's events as a Python consumer reads them: a list record's impressions, else the event."""
    obj = parse(raw)
    return to_events(obj) if obj is not None else [orjson.loads(raw)]


def expand(objs: Sequence[dict[str, Any]]) -> tuple[pa.Table, np.ndarray]:
    """Valid list records (`problems` says nothing) as their impression events with ARROW_SCHEMA, in list
    order then display order, and each row's list (an index into objs)."""
    sizes = np.fromiter((len(o["items"]) for o in objs), dtype=np.int64, count=len(objs))
    parent = np.repeat(np.arange(len(objs)), sizes)
    take = pa.array(parent)
    positions = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1

    def shared(values: list, type_: pa.DataType) -> pa.Array:  # one value per list, repeated for its items
        return pa.array(values, type_).take(take)

    columns = {
        "event_id": pa.array([event_id(o["request_id"], p) for o, n in zip(objs, sizes.tolist())
                              for p in range(1, n + 1)], pa.string()),
        "event_ts": shared([parse_ts(o["event_ts"]) for o in objs], pa.timestamp("ms", tz="UTC")),
        "item_id": pa.array([i for o in objs for i in o["items"]], pa.string()),
        "author_id": pa.array([a for o in objs for a in o["authors"]], pa.string()),
        "position": pa.array(positions, pa.int32()),
        "event_type": pa.repeat(pa.scalar("impression"), len(parent)),
        "dwell_ms": pa.nulls(len(parent), pa.int64()),
    }
    for name in ("tenant_id", "user_id", "request_id", "surface", "device", "query", "model_version"):
        columns[name] = shared([o.get(name) for o in objs], pa.string())
    columns["schema_version"] = shared([o["schema_version"] for o in objs], pa.int32())
    columns["explore"] = shared([o.get("explore") for o in objs], pa.bool_())
    return pa.table([columns[f.name] for f in ARROW_SCHEMA], schema=ARROW_SCHEMA), parent


def decode_records(raws: Sequence[bytes]) -> DecodedBatch:
    """decode_batch for a topic holding list records too: each valid list becomes its impression rows, all
    with the list's input index in `kept` (so they share its offset), in input order; a broken list is
    rejected whole with its reason. Never raises, like decode_batch."""
    joined = b"\n".join(raws)
    if MARKER not in joined:  # plain events only: one search, where a test per record was a fifth of decoding
        return decode_batch(raws, joined=joined)
    lists: dict[int, dict[str, Any]] = {}
    rejected: list[Rejected] = []
    for i, raw in enumerate(raws):
        obj = parse(raw)  # a plain event costs one substring test
        if obj is None:
            continue
        why = _problems_or_crash(obj)
        if why:
            rejected.append(Rejected(i, f"impression list: {why}"))
        else:
            lists[i] = obj
    if not lists and not rejected:
        return decode_batch(raws)
    special = set(lists) | {r.index for r in rejected}
    plain_at = [i for i in range(len(raws)) if i not in special]
    plain = decode_batch([raws[i] for i in plain_at])
    index = pa.array(plain_at, pa.int64())
    rejected += [Rejected(plain_at[r.index], r.reason) for r in plain.rejected]
    tables, kept = [plain.table], [index.take(plain.kept)]
    if lists:
        table, rows_of, failed = _expand_safely(lists)
        tables.append(table)
        kept.append(rows_of)
        rejected += failed
    merged, order_of = pa.concat_tables(tables), pa.concat_arrays(kept)
    order = pa.array(np.argsort(order_of.to_numpy(), kind="stable"))  # input order; a list's rows stay in theirs
    return DecodedBatch(merged.take(order), order_of.take(order), sorted(rejected, key=lambda r: r.index))


def _expand_safely(lists: dict[int, dict[str, Any]]) -> tuple[pa.Table, pa.Array, list[Rejected]]:
    """All lists at once; if that raises (nothing `problems` let through should), list by list, rejecting
    the ones that raise."""
    at = list(lists)
    try:
        table, parent = expand([lists[i] for i in at])
        return table, pa.array(np.asarray(at, dtype=np.int64)[parent], pa.int64()), []
    except Exception:  # noqa: BLE001 - find the list that raised; the others land
        tables, kept, failed = [], [], []
        for i in at:
            try:
                table, parent = expand([lists[i]])
            except Exception as exc:  # noqa: BLE001
                failed.append(Rejected(i, f"impression list: could not be expanded ({type(exc).__name__}: {exc})"))
                continue
            tables.append(table)
            kept.append(pa.array(np.full(len(parent), i, dtype=np.int64)))
        return (pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table(),
                pa.concat_arrays(kept) if kept else pa.array([], pa.int64()), failed)


def _problems_or_crash(obj: dict[str, Any]) -> str:
    try:
        return problems(obj)
    except Exception as exc:  # noqa: BLE001 - no record may stop the sink: it is rejected with what it raised
        return f"could not be checked ({type(exc).__name__}: {exc})"
