"""The checkpoint-against-the-log check: every way a checkpoint can fall outside its log fails, naming it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.ingest.checkpoint import Checkpoint
from feedloop.ingest.errors import LogMismatch
from feedloop.ingest.log_range import LogRange, check

ID_A, ID_B = "01a24020-1433-7e62-bbe4-bfe0c50a69db", "01a24021-2e4f-7a83-bf2f-158ae66819ed"


def _ckpt(next_offset: int, topic_id: str = ID_A) -> Checkpoint:
    return Checkpoint("engagement", 3, next_offset=next_offset, chunk_records=1000, topic_id=topic_id)



@pytest.mark.parametrize("ckpt,log,says", [
    pytest.param(_ckpt(56_884), LogRange(3, 0, 520, ID_A, reaches=False),
                 ["engagement[3]", "next_offset 56,884", "offsets 0-519", "the log was reset",
                  "feedloop ingest reset-checkpoint --partition 3 --to earliest"], id="ahead-of-a-reset-log"),
    pytest.param(_ckpt(56_884), LogRange(3, 0, 0, ID_A, reaches=False),
                 ["next_offset 56,884", "no records (next offset 0)", "reset-checkpoint --partition 3"],
                 id="ahead-of-an-empty-log"),
    pytest.param(_ckpt(1_000), LogRange(3, 4_000, 9_000, ID_A, reaches=True),
                 ["next_offset 1,000", "offsets 4,000-8,999", "3,000 offsets (1,000-3,999) were deleted",
                  "they are lost", "reset-checkpoint --partition 3 --to earliest"], id="behind-the-start"),
    pytest.param(_ckpt(500), LogRange(3, 0, 60_000, ID_B, reaches=True),
                 ["topic id " + ID_A, "recreated (now topic id " + ID_B, "offsets 0-59,999",
                  "reset-checkpoint --partition 3"], id="recreated-and-grown-past-the-checkpoint"),
])
def test_a_checkpoint_outside_its_log_fails_naming_partition_checkpoint_log_and_the_fix(ckpt, log, says):
    with pytest.raises(LogMismatch) as err:
        check(ckpt, log)
    for words in says:
        assert words in str(err.value), (words, str(err.value))


@pytest.mark.parametrize("ckpt,log", [
    pytest.param(_ckpt(9_000), LogRange(3, 0, 9_000, ID_A, reaches=True), id="at-the-end"),
    pytest.param(_ckpt(4_000), LogRange(3, 4_000, 9_000, ID_A, reaches=True), id="at-the-start-after-retention"),
    pytest.param(_ckpt(0, topic_id=""), LogRange(3, 0, 0, ID_A, reaches=True), id="never-ingested"),
    pytest.param(_ckpt(0), LogRange(3, 0, 50, ID_B, reaches=True), id="nothing-landed-before-the-topic-was-recreated"),
    pytest.param(_ckpt(700, topic_id=""), LogRange(3, 0, 900, ID_A, reaches=True), id="id-not-yet-recorded"),
    pytest.param(_ckpt(700), LogRange(3, 0, 900, "", reaches=True), id="broker-without-topic-ids"),
])
def test_a_checkpoint_inside_its_log_passes(ckpt, log):
    check(ckpt, log)


@settings(max_examples=200, deadline=None)
@given(next_offset=st.integers(0, 10**12), start=st.integers(0, 10**12), length=st.integers(0, 10**12),
       same_topic=st.booleans())
def test_the_check_passes_exactly_when_the_checkpoint_is_within_the_same_log(next_offset, start, length, same_topic):
    end = start + length
    log = LogRange(3, start, end, ID_A if same_topic else ID_B, reaches=next_offset == 0 or end >= next_offset)
    fits = (same_topic or next_offset == 0) and start <= next_offset and (next_offset == 0 or end >= next_offset)
    try:
        check(_ckpt(next_offset), log)
    except LogMismatch as exc:
        assert not fits
        assert "engagement[3]" in str(exc) and f"next_offset {next_offset:,}" in str(exc)
        assert "feedloop ingest reset-checkpoint --partition 3" in str(exc)
    else:
        assert fits
