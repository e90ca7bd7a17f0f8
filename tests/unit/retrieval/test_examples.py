"""Positives and impressions of a window: event types, event days, arrival before the cutoff, one row per day."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa

from feedloop.retrieval import examples

NOV = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _ts(day: int, hour: int) -> datetime:
    return NOV.replace(day=day, hour=hour)


def _events(rows) -> pa.Table:
    kind, user, item, event, arrived = zip(*rows)
    return pa.table({"event_type": list(kind), "tenant_id": ["acme"] * len(rows), "user_id": list(user),
                     "item_id": list(item), "event_ts": pa.array(event, pa.timestamp("ms", tz="UTC")),
                     "ingest_ts": pa.array(arrived, pa.timestamp("ms", tz="UTC"))})


EVENTS = _events([
    ("click", "u1", "a", _ts(1, 10), _ts(1, 10)),
    ("like", "u1", "a", _ts(1, 11), _ts(1, 11)),      # same pair, same day: one row
    ("share", "u1", "a", _ts(2, 9), _ts(2, 9)),       # same pair, next day: another row
    ("impression", "u2", "b", _ts(1, 9), _ts(1, 9)),  # shown, not a positive
    ("dwell", "u2", "b", _ts(1, 9), _ts(1, 9)),       # not a positive type
    ("click", "u2", "c", _ts(2, 23), _ts(3, 1)),      # arrived after the cutoff: not seen yet
    ("click", "u3", "d", _ts(3, 1), _ts(3, 1)),       # after the window
    ("impression", "u1", "b", _ts(2, 8), _ts(2, 8)),
    ("impression", "u3", "b", _ts(3, 8), _ts(3, 8)),  # after the window
])


def test_positives_are_distinct_pairs_per_event_day_that_arrived_before_the_cutoff():
    got = examples.positives(EVENTS, start=date(2026, 11, 1), end=date(2026, 11, 3), cutoff=_ts(3, 0),
                             event_types=("click", "like", "share"))
    assert got.schema == examples.POSITIVES_SCHEMA
    assert got.to_pylist() == [
        {"tenant_id": "acme", "user_id": "u1", "item_id": "a", "d": date(2026, 11, 1)},
        {"tenant_id": "acme", "user_id": "u1", "item_id": "a", "d": date(2026, 11, 2)},
    ]


def test_a_later_cutoff_sees_the_late_arrival():
    got = examples.positives(EVENTS, start=date(2026, 11, 1), end=date(2026, 11, 3), cutoff=_ts(3, 2),
                             event_types=("click",))
    assert [(r["user_id"], r["item_id"]) for r in got.to_pylist()] == [("u1", "a"), ("u2", "c")]


def test_impressions_are_counted_per_item_inside_the_window():
    got = examples.impressions(EVENTS, start=date(2026, 11, 1), end=date(2026, 11, 3), cutoff=_ts(3, 0))
    assert got.to_pylist() == [{"item_id": "b", "impressions": 2}]


def test_exposure_counts_impressions_by_position_and_clicks_on_the_exploration_lists_only():
    from feedloop.contract.lake import LAKE_SCHEMA

    t = _ts(1, 5)
    base = {"tenant_id": "t", "user_id": "u", "author_id": "x", "surface": "feed", "device": "ios",
            "schema_version": 1, "kafka_topic": "e", "kafka_partition": 0, "ingest_ts": t, "event_ts": t}
    rows = [{**base, "event_id": "1", "request_id": "r", "item_id": "a", "position": 1, "event_type": "impression",
             "explore": True},
            {**base, "event_id": "2", "request_id": "r", "item_id": "b", "position": 2, "event_type": "impression",
             "explore": True},
            {**base, "event_id": "3", "request_id": "s", "item_id": "b", "position": 1, "event_type": "impression"},
            {**base, "event_id": "4", "request_id": "r", "item_id": "a", "position": 1, "event_type": "click"},
            {**base, "event_id": "5", "request_id": "s", "item_id": "b", "position": 1, "event_type": "click"}]
    events = pa.Table.from_pylist([{**r, "kafka_offset": k} for k, r in enumerate(rows)], LAKE_SCHEMA)
    shown, explored = examples.exposure(events, start=date(2026, 11, 1), end=date(2026, 11, 2), cutoff=_ts(2, 0))
    assert shown.to_pylist() == [{"item_id": "a", "surface": "feed", "position": 1, "impressions": 1},
                                 {"item_id": "b", "surface": "feed", "position": 1, "impressions": 1},
                                 {"item_id": "b", "surface": "feed", "position": 2, "impressions": 1}]
    # the click on the non-exploration list s does not count
    assert explored.to_pylist() == [{"surface": "feed", "position": 1, "impressions": 1, "clicks": 1},
                                    {"surface": "feed", "position": 2, "impressions": 1, "clicks": 0}]
