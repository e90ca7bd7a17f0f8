"""Errors of the ingest package, apart so the checkpoint, the fence, the sink and replay can all raise them."""

from __future__ import annotations


class IngestError(RuntimeError):
    """A run that saved everything but must not pass silently (too many dead letters, bad config)."""


class Fenced(IngestError):
    """Another sink run, replay or reset claimed the partition's checkpoint: this writer stops, committing nothing."""


class LogMismatch(IngestError):
    """The checkpoint does not fit the Kafka log (reset, recreated or trimmed): an operator must decide."""


class BrokerSilent(IngestError):
    """The broker reported records past the run's position but answered every fetch with nothing for too long."""
