"""Refused versions and their backoff: a broken version is retried later, never every tick, and never given up on.

Why per version: the same broken version is not downloaded again every tick, a new version in the pointer
is tried at once, and a fixed artifact or a later good version is still picked up (TF Serving #1738 and
Triton #6534 stopped retrying and silently served the old model).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from feedloop.core.config import ServingSettings
from feedloop.core.storage import ObjectStore
from feedloop.serving.model import SwapRefused, Target, first_line

REMEMBERED_REFUSALS = 32   # versions whose refusal (and backoff) a pod remembers; older ones are tried afresh


def download(store: ObjectStore, bucket: str, key: str) -> bytes:
    """One file a pod needs to load a version or a snapshot; S3 trouble and a missing file are refusals (retried
    with backoff by the caller), never an exception that stops its watcher."""
    try:
        found = store.get(bucket, key)
    except Exception as exc:  # noqa: BLE001 - transient S3 trouble: retried with backoff
        raise SwapRefused("s3_error", f"cannot download s3://{bucket}/{key}: {first_line(exc)}") from None
    if found is None:
        raise SwapRefused("missing_artifact", f"s3://{bucket}/{key} does not exist")
    return found.body


@dataclass(frozen=True)
class Refusal:
    """Why a version (or the pointer itself) was refused, and when it may be tried again."""

    version: str
    reason: str
    message: str
    at: float                  # wall time of the latest refusal
    attempts: int              # refusals in a row
    retry_at: float            # on the watcher's clock

    def describe(self, now: float) -> dict[str, Any]:
        return {"version": self.version, "reason": self.reason, "message": self.message, "at": _iso(self.at),
                "attempts": self.attempts, "retry_in_seconds": round(max(0.0, self.retry_at - now), 3)}


class Refusals:
    """The latest refusal of each target ("pointer": live.json itself); the oldest are forgotten past
    REMEMBERED_REFUSALS, so a pod that saw many bad versions does not grow without bound."""

    def __init__(self, cfg: ServingSettings, clock: Callable[[], float]):
        self.cfg, self.clock = cfg, clock
        self._by_key: OrderedDict[Target | str, Refusal] = OrderedDict()

    def get(self, key: Target | str) -> Refusal | None:
        return self._by_key.get(key)

    def waiting(self, key: Target | str) -> bool:
        """Whether a refusal of `key` is still waiting out its backoff."""
        refusal = self._by_key.get(key)
        return refusal is not None and self.clock() < refusal.retry_at

    def clear(self, key: Target | str) -> None:
        self._by_key.pop(key, None)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` refusals in a row: retry_initial_s * 2^(attempts - 1), capped."""
        return min(self.cfg.retry_initial_s * 2 ** min(attempts - 1, 30), self.cfg.retry_max_s)

    def record(self, key: Target | str, version: str, refused: SwapRefused) -> Refusal:
        """Remember a refusal of `key`: one more attempt in a row, the next one after its backoff."""
        before = self._by_key.pop(key, None)
        attempts = before.attempts + 1 if before is not None else 1
        refusal = Refusal(version, refused.reason, str(refused), time.time(), attempts,
                          self.clock() + self.backoff(attempts))
        self._by_key[key] = refusal
        while len(self._by_key) > REMEMBERED_REFUSALS:
            self._by_key.popitem(last=False)
        return refusal

    def describe(self) -> dict[str, str]:
        return {r.version: f"{r.reason}: {r.message}" for r in self._by_key.values()}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
