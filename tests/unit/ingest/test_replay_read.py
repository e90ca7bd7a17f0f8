"""A replay's read of a chunk ends at empty polls only where the log ends: its objects are rewritten from what it
read, so a read a busy broker cut short would replace landed rows with fewer."""

from __future__ import annotations

import pytest

from feedloop.ingest import replay
from feedloop.ingest.chunk import Chunk
from feedloop.ingest.errors import IngestError
from feedloop.ingest.partition import limits
from tests.unit.ingest.test_idle_flush import ScriptedLog
from tests.unit.ingest.test_pipeline import SETTINGS, TOPIC


def _chunk() -> Chunk:
    return Chunk(TOPIC, 0, 0, 40, limits(SETTINGS.ingest))


def test_empty_polls_from_a_busy_broker_do_not_cut_a_chunk_short():
    slow = ScriptedLog([(0, 5), None, None, None, (5, 30)])

    assert replay._read_chunk(slow, _chunk(), 30, SETTINGS) == 30


def test_empty_polls_at_the_end_of_the_log_end_the_read():
    assert replay._read_chunk(ScriptedLog([(0, 12), None, None]), _chunk(), 30, SETTINGS) == 12


def test_records_that_never_come_fail_the_replay_before_the_chunk_is_rewritten():
    stuck = ScriptedLog([(0, 5)], end=30)        # the broker never returns 5..29
    impatient = SETTINGS.model_copy(update={"ingest": SETTINGS.ingest.model_copy(update={"max_run_seconds": 0})})

    with pytest.raises(IngestError, match=r"offsets 5\.\.29 did not come within ingest.max_run_seconds"):
        replay._read_chunk(stuck, _chunk(), 30, impatient)
