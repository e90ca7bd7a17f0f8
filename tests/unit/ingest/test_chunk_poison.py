"""A chunk never raises on what a producer sent: not the value, and not the Kafka record timestamp either.

The record timestamp (CreateTime) is set by the producer and becomes ingest_ts, the arrival time the
lateness window and the dead-letter day are computed from. An absurd one (year 9999, -1 for "none")
used to raise OverflowError / ArrowInvalid in Chunk.add: the sink stopped at that offset on every run.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
import pyarrow.compute as pc
import pytest

from feedloop.contract import events
from feedloop.core import utc
from feedloop.ingest.chunk import Chunk, Limits
from tests.unit.events.test_contract import GOOD

NOW_MS = int(events.parse_ts(GOOD["event_ts"]).timestamp() * 1000) + 2000
LIMITS = Limits(timedelta(hours=48), timedelta(minutes=10))


def chunk() -> Chunk:
    return Chunk("engagement", 0, 0, 100, LIMITS)


@pytest.mark.parametrize("timestamp_ms", [
    pytest.param(253402300800000, id="year-10000"),
    pytest.param(2**62, id="beyond-arrow-microseconds"),
    pytest.param(-1, id="no-timestamp"),
    pytest.param(None, id="none"),
    pytest.param(-(2**40), id="year-1935"),
    pytest.param(int(utc.MAX.timestamp() * 1000), id="year-2100"),
])
def test_an_absurd_record_timestamp_dead_letters_the_record_naming_it_and_the_rest_lands(timestamp_ms):
    c = chunk()
    values = [orjson.dumps({**GOOD, "event_id": "a"}), orjson.dumps({**GOOD, "event_id": "b"}), b"not json"]
    c.add([0, 1, 2], [NOW_MS, timestamp_ms, timestamp_ms], values)

    assert [t for table in c.rows for t in table["event_id"].to_pylist()] == ["a"]
    dead = [row for table in c.dead for row in table.to_pylist()]
    assert [d["kafka_offset"] for d in dead] == [1, 2] and [d["raw"] for d in dead] == values[1:]
    assert dead[0]["reason"].startswith(f"kafka timestamp: {-1 if timestamp_ms is None else timestamp_ms} ms")
    assert dead[1]["reason"].startswith("<event>: not valid JSON")
    for d in dead:  # the arrival is clamped into the accepted range, so the dead-letter day is a real day
        assert utc.MIN <= d["ingest_ts"] < utc.MAX
    assert c.deadletter_objects() and c.events_objects()  # the objects can be named and written


def test_clamping_is_deterministic_so_a_replay_rewrites_the_same_bytes():
    first, second = chunk(), chunk()
    for c in (first, second):
        c.add([0, 1], [2**62, -1], [orjson.dumps(GOOD), b"x"])
    assert first.deadletter_objects().keys() == second.deadletter_objects().keys()
    for key, table in first.deadletter_objects().items():
        assert table.equals(second.deadletter_objects()[key])
    assert pc.sum(pc.is_null(first.dead[0]["ingest_ts"])).as_py() == 0
