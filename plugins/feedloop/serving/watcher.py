"""Follow ranker/live.json and swap verified models in, atomically, without ever giving up.

Why this shape: requests read `watcher.state` once (one reference to an immutable Serving), so a
swap is a single assignment: requests in flight finish on the model they started with, new ones
use the new model, and nothing waits on a lock. The pointer is read with one conditional GET per
interval (no LIST). Whatever goes wrong loading a version (a refusal, S3 trouble, a malformed
manifest, a bug) leaves the old model serving and is a Refusal (refusals.py): counted by reason, shown
in /version and retried with backoff per version (exponential, capped, forever), so the same broken version is
not downloaded again every tick, a new version in the pointer is tried at once, and a fixed artifact
or a later good version is picked up (TF Serving #1738 and Triton #6534 stopped retrying and silently
served the old model). The previous and canary models stay loaded, so a rollback to the previous
version is an in-memory swap; the local cache (local_cache.py) names the live model after every swap, rollbacks
included, so a cold start with S3 down serves what was live, never what was rolled back.
features/live.json is polled the same way (FeatureFollower): each model is bound to the newest
published snapshot of its feature definitions inside the same single assignment, so a request
reads one model with one snapshot, before or after a swap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from feedloop.core.config import ServingSettings
from feedloop.core.storage import NOT_MODIFIED, ObjectStore
from feedloop.serving import metrics
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.memory import MemoryTrimmer
from feedloop.serving.model import (ARTIFACTS, MANIFEST, LoadedModel, Pointer, Root, SwapRefused, Target, build,
                                    first_line, parse_manifest)
from feedloop.serving.polling import PollLoop
from feedloop.serving.published_features import FeatureFollower
from feedloop.serving.refusals import Refusal, Refusals, download

log = logging.getLogger("feedloop.serving")


@dataclass(frozen=True)
class Serving:
    """What requests use; replaced as a whole on every change."""

    live: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_percent: float = 0.0
    previous: LoadedModel | None = None
    seq: int = 0

    def pick(self, user_id: str) -> LoadedModel | None:
        """The canary for a stable share of users (by a hash of user_id), else the live model."""
        if self.canary is not None and canary_bucket(user_id) < self.canary_percent:
            return self.canary
        return self.live


def canary_bucket(user_id: str) -> float:
    """A stable position of the user in [0, 100): the same user always gets the same model."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100.0


@dataclass
class WatchStatus:
    """What /version and the staleness metric report about the pointer."""

    etag: str | None = None
    seq: int | None = None
    last_ok: float | None = None          # wall time of the last successful pointer read
    last_error: str | None = None
    pending: Pointer | None = None        # a pointer not (fully) applied yet
    next_attempt: float = 0.0
    last_refusal: Refusal | None = None


class Watcher:
    def __init__(self, *, store: ObjectStore, bucket: str, key: str, versions: Root, cfg: ServingSettings,
                 cache: LocalCache, features: FeatureFollower, clock: Callable[[], float] = time.monotonic):
        self.store, self.bucket, self.key, self.versions, self.cfg = store, bucket, key, versions, cfg
        self.cache, self.features, self.clock = cache, features, clock
        self.state = Serving()
        self.status = WatchStatus()
        self._refusals = Refusals(cfg, clock)
        self._next_poll = 0.0
        self._cache_tried = False
        self._gauges: set[tuple[str, str, str]] = set()
        self._snapshot_gauges: set[tuple[str, str, str, str]] = set()
        self.trimmer = MemoryTrimmer()
        self._loop = PollLoop("model-watcher", tick=self.tick, wake_at=self._wake_at, clock=clock,
                              retry_s=cfg.retry_initial_s, nice=cfg.loader_nice)

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Call from a thread at the pod's priority: the trimmer thread started here inherits it."""
        self.trimmer.start()
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.trimmer.stop()

    def _wake_at(self) -> float:
        """When the next poll, pending retry or feature rebind is due."""
        wake = self._next_poll
        if self.status.pending is not None:
            wake = min(wake, self.status.next_attempt)
        if self.features.status.dirty:
            wake = min(wake, self.features.status.next_attempt)
        return wake

    # ---- one step -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Poll both pointers if their interval is due, then (re)try what is pending if its backoff is due."""
        now = self.clock()
        if now >= self._next_poll:
            self._next_poll = now + self.cfg.poll_interval_s
            self._poll()
            self.features.poll()
        pending = self.status.pending
        if pending is not None and self.clock() >= self.status.next_attempt:
            self._apply(pending)
        if self.features.due():
            self._rebind()
        metrics.STALENESS.set(self.staleness() or 0.0)
        metrics.FEATURE_SNAPSHOT_AGE.set(self.snapshot_age() or 0.0)
        metrics.READY.set(1 if self.state.live is not None else 0)

    def snapshot_age(self) -> float | None:
        """Seconds since the as_of of the live model's feature snapshot began (None: no model or no as_of)."""
        live = self.state.live
        return None if live is None else live.snapshot_ref.age_seconds(time.time())

    def staleness(self) -> float | None:
        """Seconds since the pointer was last read successfully (None: never)."""
        return None if self.status.last_ok is None else max(0.0, time.time() - self.status.last_ok)

    def _poll(self) -> None:
        try:
            found = self.store.get_if_changed(self.bucket, self.key, self.status.etag)
        except Exception as exc:  # noqa: BLE001 - S3 down, DNS, timeouts: keep serving
            metrics.POLL_ERRORS.inc()
            self.status.last_error = f"cannot read s3://{self.bucket}/{self.key}: {first_line(exc)}"
            log.warning("%s; still serving %s", self.status.last_error, self._serving_text())
            if self.state.live is None and not self._cache_tried:
                self._load_last_good()
            return
        self.status.last_ok = time.time()
        self.status.last_error = None
        if found is None:
            self.status.last_error = f"s3://{self.bucket}/{self.key} does not exist yet (no model promoted)"
            return
        if found is NOT_MODIFIED:
            return
        self.status.etag = found.etag
        try:
            pointer = Pointer.parse(found.body, found.etag, self.versions)
        except SwapRefused as refused:
            self._refuse("pointer", "live.json", refused)
            self.status.pending = None
            return
        self._refusals.clear("pointer")
        log.info("live.json changed (seq %s): live %s%s", pointer.seq, pointer.live.version,
                 f", canary {pointer.canary.version} at {pointer.canary_percent:g}%" if pointer.canary else "")
        self.status.seq = pointer.seq
        self.status.pending = pointer
        self.status.next_attempt = 0.0          # tried at once; a version still in its backoff is skipped

    def _apply(self, pointer: Pointer) -> None:
        old = self.state
        live = self._obtain(pointer.live, role="live")
        canary = self._obtain(pointer.canary, role="canary") if pointer.canary is not None else None
        done = live is not None and (pointer.canary is None or canary is not None)
        new_live = live or old.live
        previous = old.live if (old.live is not None and new_live is not old.live) else old.previous
        if previous is not None and new_live is not None and previous.version == new_live.version:
            previous = old.previous
        new_live, canary, previous = self.features.bind([new_live, canary, previous])
        self.state = Serving(live=new_live, canary=canary, canary_percent=pointer.canary_percent if canary else 0.0,
                             previous=previous, seq=pointer.seq if done else old.seq)
        if new_live is not None and (old.live is None or new_live.target != old.live.target):
            self.cache.mark_live(new_live.target)
        kept = {id(m) for m in (self.state.live, self.state.canary, self.state.previous)}
        dropped = any(m is not None and id(m) not in kept for m in (old.live, old.canary, old.previous))
        del old, live, canary, new_live, previous
        if dropped:
            self.trimmer.soon()
        self._set_gauges()
        if done:
            self.status.pending = None
            return
        waits = [r.retry_at for t in (pointer.live, pointer.canary) if t is not None and (r := self._refusals.get(t))]
        self.status.next_attempt = min(waits, default=self.clock() + self.cfg.retry_initial_s)
        log.warning("pointer seq %s not fully applied; serving %s; retrying in %.1fs", pointer.seq,
                    self._serving_text(), self.status.next_attempt - self.clock())

    def _rebind(self) -> None:
        """A features-only change: the same models, each with the newest verified snapshot, in one assignment."""
        old = self.state
        live, canary, previous = self.features.bind([old.live, old.canary, old.previous])
        if live is old.live and canary is old.canary and previous is old.previous:
            return
        self.state = replace(old, live=live, canary=canary, previous=previous)
        del old, live, canary, previous
        self.trimmer.soon()
        self._set_gauges()
        log.info("feature snapshots now: %s", self._snapshots_text())

    def _obtain(self, target: Target, *, role: str) -> LoadedModel | None:
        """The model of target: already in memory (live, canary or previous), else loaded and verified.

        None while a refusal of target waits out its backoff, or when this attempt is refused.
        """
        for model in (self.state.live, self.state.canary, self.state.previous):
            if model is not None and model.target == target:
                return model
        if self._refusals.waiting(target):
            return None
        t0 = time.perf_counter()
        try:
            manifest_body, manifest, files = self._download(target)
            model = build(target, manifest, files, onnx_threads=self.cfg.onnx_threads,
                          sample_max_abs_diff=self.cfg.sample_max_abs_diff, source="s3")
        except SwapRefused as refused:
            self._refuse(target, target.version, refused)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug or an input nobody foresaw: refused like any bad version
            log.exception("loading %s failed unexpectedly", target.version)
            self._refuse(target, target.version, SwapRefused(
                "unexpected_error", f"{target.version}: loading failed with {type(exc).__name__}: {first_line(exc)}"))
            return None
        metrics.SWAP_SECONDS.observe(time.perf_counter() - t0)
        metrics.SWAPS.labels(role).inc()
        self._refusals.clear(target)
        self.cache.save(target, manifest_body, files)
        log.info("loaded %s as %s in %.2fs (verified sha256, signature, sample scores)", target.version, role,
                 model.load_seconds)
        return model

    def _download(self, target: Target) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
        manifest_body = self._get(target, MANIFEST)
        manifest = parse_manifest(target, manifest_body)
        return manifest_body, manifest, {name: self._get(target, name) for name in ARTIFACTS}

    def _get(self, target: Target, name: str) -> bytes:
        return download(self.store, target.bucket, target.key(name))

    def _load_last_good(self) -> None:
        self._cache_tried = True
        cached = self.cache.load()
        if cached is None:
            log.warning("S3 is unreachable and no last-known-good model is cached: not ready until S3 answers")
            return
        target, manifest_body, files = cached
        try:
            model = build(target, parse_manifest(target, manifest_body), files, onnx_threads=self.cfg.onnx_threads,
                          sample_max_abs_diff=self.cfg.sample_max_abs_diff, source="cache")
        except SwapRefused as refused:
            self._refuse(target, target.version, refused)
            return
        self.state = Serving(live=model)
        self._set_gauges()
        log.warning("S3 is unreachable: serving the last-known-good local copy of %s", target.version)

    def _refuse(self, key: Target | str, version: str, refused: SwapRefused) -> None:
        """Count, remember and log a refusal; the next attempt of `key` waits out its backoff."""
        refusal = self._refusals.record(key, version, refused)
        self.status.last_refusal = refusal
        metrics.SWAP_FAILURES.labels(refused.reason).inc()
        log.error("refused %s (%s): %s; still serving %s; next try in %.1fs", version, refused.reason, refused,
                  self._serving_text(), self._refusals.backoff(refusal.attempts))

    def _set_gauges(self) -> None:
        now = {(m.version, m.target.sha256, role)
               for role, m in (("live", self.state.live), ("canary", self.state.canary)) if m is not None}
        for labels in self._gauges - now:
            metrics.LIVE_MODEL.labels(*labels).set(0)
        for labels in now:
            metrics.LIVE_MODEL.labels(*labels).set(1)
        self._gauges = now
        snapshots = {(m.snapshot_ref.id, m.snapshot_ref.as_of or "", m.snapshot_ref.source, role)
                     for role, m in (("live", self.state.live), ("canary", self.state.canary)) if m is not None}
        for labels in self._snapshot_gauges - snapshots:
            metrics.FEATURE_SNAPSHOT.labels(*labels).set(0)
        for labels in snapshots:
            metrics.FEATURE_SNAPSHOT.labels(*labels).set(1)
        self._snapshot_gauges = snapshots

    def _snapshots_text(self) -> str:
        roles = (("live", self.state.live), ("canary", self.state.canary), ("previous", self.state.previous))
        return ", ".join(f"{role} {m.version} with {m.snapshot_ref.id}" for role, m in roles if m is not None)

    def _serving_text(self) -> str:
        live = self.state.live
        return live.version if live is not None else "no model (not ready)"

    def describe(self) -> dict[str, Any]:
        s, st = self.state, self.status
        return {
            "live": s.live.describe() if s.live else None,
            "previous": s.previous.describe() if s.previous else None,
            "canary": {**s.canary.describe(), "percent": s.canary_percent} if s.canary else None,
            "pointer": {"etag": st.etag, "seq": st.seq, "applied_seq": s.seq,
                        "staleness_seconds": _round(self.staleness()),
                        "last_error": st.last_error,
                        "pending": st.pending.live.version if st.pending else None,
                        "retry_in_seconds": _round(max(0.0, st.next_attempt - self.clock())) if st.pending else None},
            "refused": self._refusals.describe(),
            "last_refusal": st.last_refusal.describe(self.clock()) if st.last_refusal else None,
            "features": self.features.describe(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
