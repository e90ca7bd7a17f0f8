"""An iterable produced on its own thread, a bounded number of items ahead of whoever consumes it.

Why: the training-set build fetches each day's rows from DuckDB, then derives their features in numpy. Pulled one
after the other on one thread, the cores sat idle in turn (DuckDB's sort while numpy waited, numpy while DuckDB
did); both release the GIL, so a producer thread keeps one running beside the other. The bound keeps the memory
of what is fetched ahead to `size` items.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_POLL_S = 0.1       # how often a producer blocked on a full queue checks whether the consumer has gone


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


def ahead(items: Iterable[T], size: int, *, name: str = "ahead") -> Iterator[T]:
    """`items` in order, produced on a thread at most `size` ahead. The producer's exception is raised here, where
    the item it failed on would have come; closing this iterator early (or an exception in the consumer) stops the
    producer after the item it is producing, and closes `items` if it is a generator."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    source = iter(items)

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:   # handed to the consumer, which raises it
            put(_Failed(error))
        finally:
            getattr(source, "close", lambda: None)()   # a generator's cleanup (an open query's result) runs now

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
