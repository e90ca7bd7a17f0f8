"""The closed loop stops, naming the shortfall, when the lake holds clearly less of a day than was sent."""

from __future__ import annotations

from datetime import date

import pytest

from feedloop.ops import demo

DAY = date(2026, 12, 3)
SERVED = {"events": 63_665, "pod_impressions": 123_072}   # 186,737 events sent on the day


def test_a_day_that_landed_half_its_events_stops_the_loop_naming_the_counts():
    # bench/loop.py, 2026-12-06: the broker answered fetches with nothing and the day landed 92,422 events
    with pytest.raises(RuntimeError, match=r"landed 92,422 of the 186,737 events sent on 2026-12-03 \(49%"):
        demo.check_landed(DAY, 92_422, SERVED)


@pytest.mark.parametrize("landed", [186_371, 186_737, 190_000, 177_401])
def test_a_day_that_landed_within_a_few_percent_goes_on(landed):
    # outcomes after midnight and late arrivals move a few events to the neighbouring days
    demo.check_landed(DAY, landed, SERVED)


def test_a_day_with_nothing_sent_is_not_checked():
    demo.check_landed(DAY, 0, {})
