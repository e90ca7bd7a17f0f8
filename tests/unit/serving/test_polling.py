"""The watchers' thread: it never spins, outlives a tick that raises, and stops when asked."""

from __future__ import annotations

import time

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
