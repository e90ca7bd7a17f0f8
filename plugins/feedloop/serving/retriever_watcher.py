"""Follow retriever/live.json and swap verified retrievers in, atomically, independently of the ranker.

Why a sibling of serving.watcher rather than the same class: the ranker's watcher binds feature snapshots and
serves canaries, which a retriever does not yet; what they share is taken from there (Pointer and Target parsing
against the pod's own bucket and prefix, verify_file, Refusals with per-version backoff, the PollLoop thread, a
LocalCache of their own, so that a cold start with S3 down serves /recommend from the last live retriever,
verified again). The rules are the same: requests read `state` once (one immutable RetrieverState), a swap is
one assignment, anything that goes wrong loading a version leaves the current one serving and is a refusal
(counted, shown in /version, retried with backoff, a new version in the pointer tried at once), and the
previous version stays loaded so a rollback to it is an in-memory swap. A canary in retriever/live.json is not
served: the pod serves its live version and says so in /version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feedloop.core import layout
from feedloop.core.config import ServingSettings
from feedloop.core.storage import NOT_MODIFIED, ObjectStore
from feedloop.serving import metrics
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.polling import PollLoop
from feedloop.serving.model import MANIFEST, Pointer, SwapRefused, Target, first_line, verify_file
from feedloop.serving.refusals import Refusals, download
from feedloop.serving.retriever import FIXED_FILES, LoadedRetriever, build, index_file, parse_manifest, tenants
from feedloop.retrieval.index import IDS_FILE

log = logging.getLogger("feedloop.serving")
LIVE_KEY = f"{layout.RETRIEVER.prefix}live.json"


@dataclass(frozen=True)
class RetrieverState:
    """What /recommend uses; replaced as a whole on every change."""

    live: LoadedRetriever | None = None
    previous: LoadedRetriever | None = None
    seq: int = 0


class RetrieverWatcher:
    def __init__(self, *, store: ObjectStore, bucket: str, cfg: ServingSettings, cache: LocalCache,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.bucket, self.cfg, self.cache, self.clock = store, bucket, cfg, cache, clock
        self.versions = cache.versions
        self._cache_tried = False
        self.state = RetrieverState()
        self.etag: str | None = None
        self.pending: Pointer | None = None
        self.canary_ignored: str | None = None
        self.last_error: str | None = None
        self.last_ok: float | None = None
        self._refusals = Refusals(cfg, clock)
        self._next_poll = 0.0
        self._next_attempt = 0.0
        self._loop = PollLoop("retriever-watcher", tick=self.tick, clock=clock, retry_s=cfg.retry_initial_s,
                              wake_at=lambda: self._next_poll if self.pending is None
                              else min(self._next_poll, self._next_attempt), nice=cfg.loader_nice)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def tick(self) -> None:
        """Poll the pointer if its interval is due, then (re)try a pending version if its backoff is due."""
        if self.clock() >= self._next_poll:
            self._next_poll = self.clock() + self.cfg.poll_interval_s
            self._poll()
        if self.pending is not None and self.clock() >= self._next_attempt:
            self._apply(self.pending)

    def missing(self) -> str:
        """Why there is no retriever to serve, for a 503 and /readyz."""
        if self.last_error:
            return self.last_error
        refused = self._refusals.describe()
        return f"refused: {refused}" if refused else "no retriever loaded yet"

    def _poll(self) -> None:
        try:
            found = self.store.get_if_changed(self.bucket, LIVE_KEY, self.etag)
        except Exception as exc:  # noqa: BLE001 - S3 down, DNS, timeouts: keep serving
            metrics.POLL_ERRORS.inc()
            self.last_error = f"cannot read s3://{self.bucket}/{LIVE_KEY}: {first_line(exc)}"
            if self.state.live is None and not self._cache_tried:
                self._load_last_good()
            return
        self.last_ok, self.last_error = time.time(), None
        if found is None:
            self.last_error = f"s3://{self.bucket}/{LIVE_KEY} does not exist yet (no retriever promoted)"
            return
        if found is NOT_MODIFIED:
            return
        self.etag = found.etag
        try:
            pointer = Pointer.parse(found.body, found.etag, self.versions)
        except SwapRefused as refused:
            self._refuse("pointer", LIVE_KEY, refused)
            self.pending = None
            return
        self._refusals.clear("pointer")
        self.canary_ignored = pointer.canary.version if pointer.canary else None
        self.pending, self._next_attempt = pointer, 0.0

    def _apply(self, pointer: Pointer) -> None:
        old = self.state
        live = self._obtain(pointer.live)
        if live is None:
            refusal = self._refusals.get(pointer.live)
            self._next_attempt = refusal.retry_at if refusal else self.clock() + self.cfg.retry_initial_s
            return
        previous = old.live if old.live is not None and old.live is not live else old.previous
        self.state = RetrieverState(live=live, previous=previous, seq=pointer.seq)
        self.pending = None
        metrics.RETRIEVER_SWAPS.inc()
        self.cache.mark_live(live.target)
        log.info("retriever %s live (previous %s)", live.version, previous.version if previous else None)

    def _obtain(self, target: Target) -> LoadedRetriever | None:
        """The retriever of target: already in memory, else downloaded and verified; None when refused."""
        for model in (self.state.live, self.state.previous):
            if model is not None and model.target == target:
                return model
        if self._refusals.waiting(target):
            return None
        try:
            manifest_body = self._get(target, MANIFEST)
            manifest, shape = parse_manifest(target, manifest_body)
            files = {name: self._get(target, name) for name in FIXED_FILES}
            verify_file(target, manifest, IDS_FILE, files[IDS_FILE])  # before its tenants name files
            files |= {index_file(t): self._get(target, index_file(t)) for t in tenants(target, files[IDS_FILE])}
            model = build(target, manifest, shape, files, onnx_threads=self.cfg.onnx_threads,
                          warmup_k=self.cfg.recommend_candidates)
        except SwapRefused as refused:
            self._refuse(target, target.version, refused)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug or an input nobody foresaw: refused like any bad version
            log.exception("loading retriever %s failed unexpectedly", target.version)
            self._refuse(target, target.version, SwapRefused(
                "unexpected_error", f"{target.version}: loading failed with {type(exc).__name__}: {first_line(exc)}"))
            return None
        self._refusals.clear(target)
        self.cache.save(target, manifest_body, files)
        log.info("loaded retriever %s in %.2fs (verified sha256 of %d files, warm-up)", target.version,
                 model.load_seconds, len(files))
        return model

    def _load_last_good(self) -> None:
        """S3 is unreachable and nothing is loaded: the last live retriever's local copy, verified like a download."""
        self._cache_tried = True
        cached = self.cache.load()
        if cached is None:
            log.warning("S3 is unreachable and no last-known-good retriever is cached: /recommend 503 until S3 answers")
            return
        target, manifest_body, files = cached
        try:
            manifest, shape = parse_manifest(target, manifest_body)
            model = build(target, manifest, shape, files, onnx_threads=self.cfg.onnx_threads,
                          warmup_k=self.cfg.recommend_candidates)
        except SwapRefused as refused:
            self._refuse(target, target.version, refused)
            return
        self.state = RetrieverState(live=model)
        log.warning("S3 is unreachable: recommending with the last-known-good local copy of retriever %s",
                    target.version)

    def _get(self, target: Target, name: str) -> bytes:
        return download(self.store, target.bucket, target.key(name))

    def _refuse(self, key: Target | str, version: str, refused: SwapRefused) -> None:
        refusal = self._refusals.record(key, version, refused)
        metrics.RETRIEVER_SWAP_FAILURES.labels(refused.reason).inc()
        live = self.state.live
        log.error("refused retriever %s (%s): %s; still serving %s; next try in %.1fs", version, refused.reason,
                  refused, live.version if live else "no retriever", self._refusals.backoff(refusal.attempts))

    def describe(self) -> dict[str, Any]:
        s = self.state
        return {"live": s.live.describe() if s.live else None,
                "previous": s.previous.version if s.previous else None,
                "pointer": {"etag": self.etag, "applied_seq": s.seq, "last_error": self.last_error,
                            "pending": self.pending.live.version if self.pending else None,
                            "canary_not_served": self.canary_ignored},
                "refused": self._refusals.describe()}
