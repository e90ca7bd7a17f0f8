"""Give a dropped model's memory back to the OS, from a thread that runs at the pod's own priority.

Why: glibc keeps freed heap in its per-thread arenas, and a model (onnxruntime session + snapshot) is hundreds
of MB allocated from several threads: without a trim a pod's RSS climbed by ~150 MB over its first 10 swaps
(bench/serve.py), the growth onnxruntime users report after replacing sessions.

Why its own thread: malloc_trim holds the arenas' locks while it walks them, and the watchers run at
serving.loader_nice. Trimming there (after a full gc.collect, which held the GIL), the watcher was descheduled
while holding them and requests waited behind a low-priority thread: in bench/serve.py every request slower than
35 ms while pods swapped (47-92 ms, steady p99 23 ms) was waiting inside that trim or that collection. A model
holds no reference cycles (tests/unit/serving/test_watcher.py: a swapped-out model is freed by reference counting
alone), so no collection runs first.
"""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger("feedloop.serving")


class MemoryTrimmer:
    """`soon()` asks for a trim; one daemon thread runs them, coalescing requests that arrive while it trims.

    start() must run on a thread at the pod's priority (the app's lifespan): Linux threads inherit their
    creator's nice value, so a trimmer started by a watcher would be as low as the watcher."""

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wanted.set()
        self._thread.join(timeout=5)

    def soon(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            trim()


def trim() -> None:
    """malloc_trim(0) where the C library is glibc; elsewhere (musl, macOS) there is nothing to trim."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("no glibc malloc_trim here: freed memory stays with the allocator")
