"""What the Models view shows and does: every version with its metrics, the pointer history, pointer changes.

Why pages and a cache: a year of daily versions is 365 manifests (each carrying its data lineage)
and 365 metrics.json files, and a year of flips 365 history entries; reading them all took 15 s on
2 busy cores. The page shows the newest PAGE_SIZE of each, older ones page by page, so a view reads
at most that many; versions and history entries are immutable (written once, If-None-Match), so each
is read once per process and kept as a small summary. A repeated view costs one delimiter LIST of
the versions and one GET of live.json.

Pointer changes go through feedloop.promotion.pointer_change, as the CLI's and the DAGs' do (same
bounds, compare-and-swap and rollback alert); the page also sends the pointer sequence number it
showed, so a click made on a stale page (someone else flipped meanwhile) is refused instead of
applied to a pointer the operator never saw.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from feedloop.core.config import Settings
from feedloop.promotion import pointer_change
from feedloop.promotion.pointer_plan import Live
from feedloop.promotion.registry import Registry, entries

READ_THREADS = 8
PAGE_SIZE = 30  # a first view reads at most this many manifests + metrics.json + history entries


@dataclass(frozen=True)
class VersionSummary:
    """The immutable facts of one registered version that a row of the Models view shows."""

    version: str
    logical_date: str | None
    registered_at: str | None
    window: tuple[str | None, str | None]           # training data [start, end) from the dataset lineage
    auc: float | None
    ndcg: float | None
    champion: str | None                            # live when it was evaluated: "the champion of its day"
    champion_auc: float | None
    champion_ndcg: float | None
    promotable: bool
    gate_summary: str
    servable: bool                                  # ONNX parity passed: it may ever be live
    code_version: str | None

    @property
    def delta_auc(self) -> float | None:
        return _delta(self.auc, self.champion_auc)

    @property
    def delta_ndcg(self) -> float | None:
        return _delta(self.ndcg, self.champion_ndcg)


@dataclass(frozen=True)
class RetrieverSummary:
    """One registered retriever version as the view's retriever table shows it (its gate's recall@k)."""

    version: str
    window: tuple[str | None, str | None]           # training days [start, end); end is the held-out day
    estimate: str                                   # the recall the gate compared: exposure-weighted or plain
    k: int | None
    recall: float | None
    popularity: float | None
    champion: str | None
    champion_recall: float | None
    promoted: bool
    reason: str
    servable: bool


class Catalog:
    """Summaries of versions and history entries of one registry, read once each (they never change).
    summarize: a version's summary from its registry (the ranker's by default; retriever_summary for the other)."""

    def __init__(self, summarize: Callable[[Registry, str], Any] | None = None) -> None:
        self._summarize = summarize or _summary
        self._versions: dict[tuple[str, str], Any] = {}
        self._history: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def version_ids(self, registry: Registry) -> list[str]:
        """Every version folder, newest first (ids start with the logical date); one delimiter LIST."""
        root = f"{registry.prefix}versions/"
        return sorted((p[len(root):].rstrip("/") for p in _common_prefixes(registry, root)), reverse=True)

    def versions(self, registry: Registry, ids: list[str]) -> list[VersionSummary]:
        """The summaries of `ids` in that order; a version still being registered (no manifest) is left out."""
        found = self._fill(self._versions, registry, ids, lambda v: self._summarize(registry, v))
        return [found[v] for v in ids if v in found]

    def cached(self, registry: Registry, version: str) -> VersionSummary | None:
        with self._lock:
            return self._versions.get((registry.bucket, version))

    def history(self, registry: Registry, live: Live | None, *, offset: int = 0,
                limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int]:
        """(pointer writes newest first as registry.entries() rows, sliced; how many there are). Read-only.

        Entry seq N is history/<N>.json and the live pointer carries the newest seq, so a page is read
        by name, never by listing the history.
        """
        if live is None:
            return [], 0
        newest = live.pointer["seq"]
        page = list(range(newest - offset, max(newest - offset - limit, 0), -1))
        keys = {seq: f"{registry.prefix}history/{seq:010d}.json" for seq in page}
        found = self._fill(self._history, registry, list(keys.values()),
                           lambda k: registry.store.get_json(registry.bucket, k))
        # the live pointer stands in for its own entry if a crash came between the two writes
        pointers = [found.get(keys[seq]) or (live.pointer if seq == newest else None) for seq in page]
        return entries(p for p in pointers if p), newest

    def _fill(self, cache: dict, registry: Registry, names: list[str], read: Callable[[str], Any]) -> dict[str, Any]:
        """{name: cached or freshly read value}; a name whose read returns None is left out and not cached."""
        scope = registry.bucket
        with self._lock:
            missing = [n for n in names if (scope, n) not in cache]
        if missing:
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(missing))) as pool:
                fresh = dict(zip(missing, pool.map(read, missing)))
            with self._lock:
                cache.update({(scope, n): v for n, v in fresh.items() if v is not None})
        with self._lock:
            return {n: cache[(scope, n)] for n in names if (scope, n) in cache}


def change_pointer(registry: Registry, *, action: str, shown_seq: int | None, by: str, reason: str,
                   settings: Settings, to: str | None = None) -> dict[str, Any]:
    """Apply one pointer change from the page, refused if the pointer moved since it was shown; the new pointer.

    settings: where a rollback's alert goes (the page's own, as its registry's).
    """
    return pointer_change.change_pointer(action, reason=reason, by=by, to=to, registry=registry,
                                         settings=settings,
                                         shown=pointer_change.ShownPointer(shown_seq)).plan.pointer


def _summary(registry: Registry, version: str) -> VersionSummary | None:
    """None while the version is still being registered (its manifest is written last)."""
    manifest = registry.manifest(version)
    if manifest is None:
        return None
    metrics = _metrics(registry, version)
    champion = metrics.get("champion") or {}
    lineage = manifest.get("lineage") or {}
    overall = manifest.get("metrics") or {}
    gate = manifest.get("gate") or {}
    return VersionSummary(
        version=version, logical_date=manifest.get("logical_date"), registered_at=manifest.get("registered_at"),
        window=(lineage.get("window_start"), lineage.get("window_end")),
        auc=overall.get("auc"), ndcg=overall.get("ndcg@10"),
        champion=champion.get("version") or gate.get("champion"),
        champion_auc=(champion.get("overall") or {}).get("auc"),
        champion_ndcg=(champion.get("overall") or {}).get("ndcg@10"),
        promotable=bool(gate.get("promotable")), gate_summary=gate.get("summary") or "",
        servable=bool((manifest.get("parity") or {}).get("passed")), code_version=manifest.get("code_version"))


def retriever_summary(registry: Registry, version: str) -> RetrieverSummary | None:
    """None while the version is still being registered (its manifest is written last)."""
    manifest = registry.manifest(version)
    if manifest is None:
        return None
    gate = manifest.get("gate") or {}
    window = manifest.get("window") or [None, None]
    return RetrieverSummary(
        version=version, window=(window[0], window[1]), estimate=gate.get("estimate", "engaged"), k=gate.get("k"),
        recall=gate.get("candidate"), popularity=gate.get("popularity"), champion=manifest.get("champion"),
        champion_recall=gate.get("champion"), promoted=bool(gate.get("promote")), reason=gate.get("reason") or "",
        servable=bool((manifest.get("parity") or {}).get("passed")))


def _metrics(registry: Registry, version: str) -> dict[str, Any]:
    found = registry.store.get(registry.bucket, registry.version_key(version, "metrics.json"))
    return orjson.loads(found.body) if found else {}


def _common_prefixes(registry: Registry, prefix: str) -> list[str]:
    paginator = registry.store.client.get_paginator("list_objects_v2")
    return [p["Prefix"] for page in paginator.paginate(Bucket=registry.bucket, Prefix=prefix, Delimiter="/")
            for p in page.get("CommonPrefixes", [])]


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference

