"""The thread both watchers run on: tick until stopped, sleep until the next thing is due, survive any bug."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("feedloop.serving")
MIN_SLEEP_S = 0.05  # never spin, even when something is overdue


class PollLoop:
    """Calls `tick` on a daemon thread, then waits until `wake_at()` (on `clock`), or `retry_s` after a tick that
    raised: a watcher must outlive a bug in one tick without retrying it in a hot loop."""

    def __init__(self, name: str, *, tick: Callable[[], None], wake_at: Callable[[], float],
                 clock: Callable[[], float], retry_s: float, nice: int = 0):
        self.name, self.tick, self.wake_at, self.clock, self.retry_s = name, tick, wake_at, clock, retry_s
        self.nice = nice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        lower_priority(self.name, self.nice)
        while not self._stop.is_set():
            floor = MIN_SLEEP_S
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the watcher must outlive any bug in one tick, without spinning
                log.exception("%s tick failed; retrying in %.1fs", self.name, self.retry_s)
                floor = self.retry_s
            self._stop.wait(max(floor, self.wake_at() - self.clock()))


def lower_priority(name: str, nice: int) -> None:
    """Run the calling thread at `nice` (Linux: a thread has its own nice value), so that on a busy pod the
    requests' threads get the cores first and a model load waits; elsewhere, or if refused, carry on as is.

    Worth it only because a load no longer holds the GIL for long (feedloop.core.vocabulary): a low-priority
    thread holding the GIL would stall the requests instead (tried 2026-12-05 before that change: no gain)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:
        log.warning("%s: cannot lower its priority to nice %d (%s); it runs at the pod's", name, nice, exc)
