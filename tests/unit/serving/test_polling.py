"""The watchers' thread: it never spins, outlives a tick that raises, and stops when asked."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from feedloop.serving.polling import MIN_SLEEP_S, PollLoop


def _run_for(loop: PollLoop, seconds: float) -> None:
    loop.start()
    time.sleep(seconds)
    t0 = time.monotonic()
    loop.stop()
    assert time.monotonic() - t0 < 1.0 and not loop._thread.is_alive()


def test_an_overdue_wake_sleeps_the_minimum_instead_of_spinning():
    ticks = []
    loop = PollLoop("test", tick=lambda: ticks.append(1), wake_at=lambda: 0.0, clock=time.monotonic, retry_s=5.0)
    _run_for(loop, 0.5)
    assert 3 <= len(ticks) <= 0.5 / MIN_SLEEP_S + 2


def test_a_tick_that_raises_is_logged_and_retried_after_retry_s(caplog):
    ticks = []

    def broken() -> None:
        ticks.append(1)
        raise RuntimeError("a bug in one tick")

    loop = PollLoop("test-watcher", tick=broken, wake_at=lambda: 0.0, clock=time.monotonic, retry_s=0.2)
    _run_for(loop, 0.5)
    assert 2 <= len(ticks) <= 4
    assert "test-watcher tick failed; retrying in 0.2s" in caplog.text and "a bug in one tick" in caplog.text


def test_it_sleeps_until_the_next_thing_is_due():
    ticks = []
    loop = PollLoop("test", tick=lambda: ticks.append(time.monotonic()), wake_at=lambda: time.monotonic() + 0.3,
                    clock=time.monotonic, retry_s=5.0)
    _run_for(loop, 0.5)
    assert len(ticks) == 2 and ticks[1] - ticks[0] >= 0.29


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread has its own nice value on Linux only")
def test_the_loop_runs_at_its_nice_and_the_rest_of_the_pod_does_not():
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if base > 19 - 7:
        pytest.skip(f"the tests already run at nice {base}")
    seen = []
    loop = PollLoop("test", tick=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())),
                    wake_at=lambda: time.monotonic() + 5, clock=time.monotonic, retry_s=5.0, nice=base + 7)
    _run_for(loop, 0.2)
    assert seen == [base + 7]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
