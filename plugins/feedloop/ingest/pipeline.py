"""The sink's bounded writer pipeline: the poll thread only fetches, decoding and writing run behind it.

    poll thread --batches--> decoder thread --sealed chunks--> writer thread (Parquet, S3, checkpoint)

When a run's first poll comes back empty the poller asks for a flush: the open chunks are sealed as they are (a
copy: the chunk stays open) and written, so a run's last records land before its final empty polls end it.

Why: Kafka fetching is Python (kafka-python), decoding and Parquet encoding are Arrow C++ with the GIL
released and uploads wait on the network, so the three overlap instead of taking turns.

Exactly-once is the sink's commit protocol unchanged (feedloop.ingest.sink): one writer thread writes
every chunk, in the order the decoder sealed them, and a chunk is sealed only after every earlier chunk
of its partition, so each partition's checkpoint moves forward in offset order, each time after the
objects it names are on S3. Kafka offsets are committed by the caller only after `close()` returned.
After the first error no later chunk is written, so no checkpoint passes a chunk that failed.

Bounded: both hand-offs are queues of `depth` items, so a slow S3 blocks the decoder, which blocks
the poller: at most `depth` sealed chunks and `depth` fetched batches wait, besides one open chunk per
partition. Errors surface: the first exception of either thread is raised by the poller's next
`submit` or by `close`, so the task fails and is retried.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from feedloop.ingest.partition import PartitionSink

_END = object()    # the poller is done: seal what is open, write it, stop
_FLUSH = object()  # the log is idle: write what is open now, keep the chunks open


class Pipeline:
    """Two threads behind the poller; `submit` each fetched batch, then `close` (or `abort` on an error)."""

    def __init__(self, sinks: dict[int, PartitionSink], *, depth: int):
        self._sinks = sinks
        self._batches: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._chunks: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()  # an error, or an abort: decode and write nothing more
        self._threads = [threading.Thread(target=self._decode, name="feedloop-ingest-decode", daemon=True),
                         threading.Thread(target=self._write, name="feedloop-ingest-write", daemon=True)]
        for thread in self._threads:
            thread.start()

    def submit(self, partition: int, offsets: list[int], timestamps_ms: list[int], values: list[bytes]) -> None:
        """Hand on a fetched batch (ascending offsets); blocks while the pipeline is full."""
        self._raise()
        self._batches.put((partition, offsets, timestamps_ms, values))

    def flush(self) -> None:
        """Write every open chunk's records so far (its objects grow under the same names if more arrive).

        Why: a poll came back empty, so the open chunks would otherwise wait for the end of the run; written
        now, they land while the run waits out its last empty polls instead of after them."""
        self._raise()
        self._batches.put(_FLUSH)

    def close(self) -> None:
        """Seal every open chunk and wait until all are written; raises the first error of either thread."""
        self._batches.put(_END)
        self._join()
        self._raise()

    def abort(self) -> None:
        """Stop without writing what is still queued (the poller failed); a chunk being written completes."""
        self._stop.set()
        self._batches.put(_END)
        self._join()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._stop.set()

    def _decode(self) -> None:
        """Route batches into chunks and hand on each sealed one; after a failure, only drain (never block)."""
        try:
            while (item := self._batches.get()) is not _END:
                if item is _FLUSH:
                    self._seal_all()
                elif not self._stop.is_set():
                    self._guarded(self._route, *item)
            self._seal_all()
        finally:
            self._chunks.put(_END)

    def _route(self, partition: int, offsets: list[int], timestamps_ms: list[int], values: list[bytes]) -> None:
        sink = self._sinks[partition]
        sink.add(offsets, timestamps_ms, values)
        for chunk in sink.take_sealed():
            self._chunks.put((sink, chunk))

    def _seal_all(self) -> None:
        for sink in self._sinks.values():
            if not self._stop.is_set():
                self._guarded(self._seal, sink)

    def _seal(self, sink: PartitionSink) -> None:
        sink.seal()
        for chunk in sink.take_sealed():
            self._chunks.put((sink, chunk))

    def _write(self) -> None:
        while (item := self._chunks.get()) is not _END:
            if not self._stop.is_set():
                sink, chunk = item
                self._guarded(sink.write, chunk)

    def _guarded(self, step, *args) -> None:
        try:
            step(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the poller, which raises it in the task
            self._fail(exc)
