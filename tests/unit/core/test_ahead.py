"""core.ahead: the items in order, at most `size` produced ahead, the producer's error raised where its item would
have come, and a consumer that stops early stops the producer and closes its generator."""

from __future__ import annotations

import threading
import time

import pytest

from feedloop.core.ahead import ahead


def test_every_item_in_order_with_end_markers_kept():
    items = [1, None, 2, 3, None, None, 4]
    assert list(ahead(iter(items), 2)) == items


def test_the_producer_runs_at_most_size_items_ahead():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    it = ahead(items(), 3)
    assert next(it) == 0
    time.sleep(0.3)
    # consumed 1; 3 waiting in the buffer; 1 more produced and blocked on the full buffer
    assert len(produced) <= 1 + 3 + 1
    assert list(it) == list(range(1, 50))


def test_the_producers_error_is_raised_after_the_items_before_it():
    def items():
        yield "a"
        yield "b"
        raise ValueError("day 3's query failed")

    it = ahead(items(), 4)
    assert next(it) == "a" and next(it) == "b"
    with pytest.raises(ValueError, match="day 3's query failed"):
        next(it)


def test_closing_early_stops_the_producer():
    finished = threading.Event()

    def items():
        try:
            for i in range(10_000):
                yield i
        finally:
            finished.set()

    it = ahead(items(), 2, name="test-ahead")
    assert next(it) == 0
    it.close()
    assert finished.is_set()   # the generator was closed, not left to the garbage collector
    assert not any(t.name == "test-ahead" for t in threading.enumerate())


def test_an_error_in_the_consumer_stops_the_producer():
    def consume():
        for i in ahead(iter(range(10_000)), 2, name="test-ahead-2"):
            if i == 5:
                raise RuntimeError("the consumer failed")

    with pytest.raises(RuntimeError):
        consume()
    assert not any(t.name == "test-ahead-2" for t in threading.enumerate())
