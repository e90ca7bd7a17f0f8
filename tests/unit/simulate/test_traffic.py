"""Steady traffic stays exactly what the benchmarks ran on; bursty traffic has the shape production has."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import date

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from feedloop.contract import events as ev
from feedloop.ops.cli import build_parser
from feedloop.ops.cli_args import UsageError
from feedloop.core.config import load_settings
from feedloop.serving.client import Ranked
from feedloop.ops.simulate import Record, SimulationReport, Simulator
from feedloop.ops.simulate.traffic import EMPTY_HOUR_SHARE, bursty_day, hour_weights

START = date(2026, 11, 1)
T0_S = 1_793_491_200  # 2026-11-01T00:00Z
DAYS, EVENTS_PER_DAY = 7, 8000
HOUR_MS, DAY_MS = 3600_000, 86400_000


def _first_k(body: dict) -> Ranked:
    """A ranker that shows the candidates in the order given: the ranker path without a model."""
    return Ranked([c["item_id"] for c in body["candidates"][:body["limit"]]], "first-k", explore=False)


def _digest(records: list[Record], report: SimulationReport) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r.arrival_ms.to_bytes(8, "big") + r.key + r.value)
    h.update(repr((report.requests, report.events, report.late_events, report.exploration_requests,
                   report.pod_impressions, sorted(report.by_type.items()))).encode())
    return h.hexdigest()[:16]


def _simulator(traffic: str, *, days: int, events_per_day: int, seed: int, ranker=None) -> Simulator:
    settings = load_settings(environ={"FEEDLOOP_SIMULATE__TRAFFIC": traffic})
    return Simulator(settings, start=START, days=days, events_per_day=events_per_day, seed=seed, ranker=ranker)


def _by_day(sim: Simulator) -> tuple[list[list[Record]], SimulationReport]:
    report = SimulationReport(start=START, days=sim.days)
    return [sim.day_records(d, report) for d in range(sim.days)], report


# Digests of steady traffic: computed before bursty traffic existed (commit 51a5fdc), renewed when exploration
# lists became random subsets of the candidates (the legacy policy's exploration lists changed).
@pytest.mark.parametrize(("stepping", "ranker", "expected"), [
    pytest.param("records", None, "5379181381e2f1b6", id="records"),
    pytest.param("day_records", None, "ffb993f915564cb0", id="day-records"),
    pytest.param("day_records", _first_k, "076865525f8f4ae0", id="day-records-through-a-ranker"),
])
def test_steady_traffic_is_byte_for_byte_what_the_benchmarks_ran_on(stepping, ranker, expected):
    sim = _simulator("steady", days=3, events_per_day=2000, seed=3, ranker=ranker)
    if stepping == "records":
        report = SimulationReport(start=START, days=3)
        records = list(sim.records(report))
    else:
        days, report = _by_day(sim)
        records = [r for day in days for r in day]
    assert _digest(records, report) == expected


@pytest.fixture(scope="module")
def bursty():
    days, report = _by_day(_simulator("bursty", days=DAYS, events_per_day=EVENTS_PER_DAY, seed=7))
    return days, report, [(r, orjson.loads(r.value)) for day in days for r in day]


@pytest.fixture(scope="module")
def steady():
    days, report = _by_day(_simulator("steady", days=DAYS, events_per_day=EVENTS_PER_DAY, seed=7))
    return days, report, [(r, orjson.loads(r.value)) for day in days for r in day]


def _event_ms(event: dict) -> int:
    return int(ev.parse_ts(event["event_ts"]).timestamp() * 1000)


def _requests_per_hour(events) -> np.ndarray:
    hours = Counter((_event_ms(e) // 1000 - T0_S) // 3600 for _, e in events if e["event_type"] == "impression")
    return np.array([hours[h] for h in range(DAYS * 24)])


def test_bursty_hour_volumes_are_heavy_tailed_with_empty_hours_and_steady_ones_are_not(bursty, steady):
    volumes = _requests_per_hour(bursty[2])
    assert volumes.max() > 8 * np.median(volumes)
    assert 1 <= (volumes == 0).sum() <= 12  # ~3 % of 168 hours
    flat = _requests_per_hour(steady[2])
    assert flat.max() < 2 * np.median(flat) and flat.min() > 0


def test_bursty_evenings_are_busier_than_nights(bursty):
    by_hour_of_day = _requests_per_hour(bursty[2]).reshape(DAYS, 24).sum(axis=0)
    assert by_hour_of_day[18:22].sum() > 3 * by_hour_of_day[2:6].sum()


def test_a_bursty_day_keeps_about_events_per_day(bursty):
    _, report, _ = bursty
    assert report.requests == DAYS * round(EVENTS_PER_DAY / (12 * 1.3))
    assert 0.8 * DAYS * EVENTS_PER_DAY <= report.events <= 1.2 * DAYS * EVENTS_PER_DAY


def test_bursty_day_ctrs_swing_up_to_40_percent_and_steady_ones_stay_put(bursty, steady):
    ctrs = [s.ctr for s in bursty[1].per_day.values()]
    assert 1.2 < max(ctrs) / min(ctrs) < 1.5
    days = list(steady[1].per_day.values())  # steady: each day's CTR within click noise of the week's
    week = sum(s.clicks for s in days) / sum(s.impressions for s in days)
    assert all(abs(s.ctr - week) < 4 * np.sqrt(week * (1 - week) / s.impressions) for s in days)


def test_one_percent_of_bursty_events_arrive_up_to_48_hours_late(bursty, steady):
    _, report, events = bursty
    assert 0.007 <= report.late_events / report.events <= 0.013
    delays = np.array([r.arrival_ms - _event_ms(e) for r, e in events])
    assert 40 * HOUR_MS < delays.max() <= 48 * HOUR_MS + 60_000
    assert (delays > 24 * HOUR_MS).sum() > 0.3 * report.late_events
    steady_delays = [r.arrival_ms - _event_ms(e) for r, e in steady[2]]
    assert max(steady_delays) <= 6 * HOUR_MS + 60_000


def test_bursty_day_records_hold_each_event_back_until_the_day_it_arrives(bursty):
    days, _, _ = bursty
    for d, records in enumerate(days[:-1]):
        assert all(T0_S * 1000 + d * DAY_MS <= r.arrival_ms < T0_S * 1000 + (d + 1) * DAY_MS for r in records)
    earlier = [sum(_event_ms(orjson.loads(r.value)) < T0_S * 1000 + d * DAY_MS for r in records)
               for d, records in enumerate(days)]
    assert earlier[0] == 0 and all(n > 0 for n in earlier[2:])  # late events of earlier days come with later ones


def test_bursty_days_together_are_records_with_nothing_lost_or_duplicated(bursty):
    days, _, events = bursty
    sim = _simulator("bursty", days=DAYS, events_per_day=EVENTS_PER_DAY, seed=7)
    everything = list(sim.records(SimulationReport(start=START, days=DAYS)))
    assert [r for day in days for r in day] == everything
    assert len({e["event_id"] for _, e in events}) == len(events)


def test_bursty_traffic_is_seeded():
    assert np.array_equal(bursty_day(7, 3, 500).seconds, bursty_day(7, 3, 500).seconds)
    assert not np.array_equal(bursty_day(7, 3, 500).seconds, bursty_day(8, 3, 500).seconds)
    again, _ = _by_day(_simulator("bursty", days=2, events_per_day=1000, seed=5))
    once, _ = _by_day(_simulator("bursty", days=2, events_per_day=1000, seed=5))
    assert [r.value for day in again for r in day] == [r.value for day in once for r in day]


def test_hour_weights_share_the_day_and_leave_about_3_percent_of_hours_empty():
    rng = np.random.default_rng(0)
    weights = np.array([hour_weights(rng) for _ in range(2000)])
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert (weights == 0).mean() == pytest.approx(EMPTY_HOUR_SHARE, abs=0.005)


@pytest.mark.parametrize(("environ", "expected"), [
    pytest.param({}, "steady", id="default-steady"),
    pytest.param({"FEEDLOOP_SIMULATE__TRAFFIC": "bursty"}, "bursty", id="env-override"),
])
def test_traffic_comes_from_the_config_with_env_overrides(environ, expected):
    assert load_settings(environ=environ).simulate.traffic == expected


def test_an_unknown_traffic_is_an_error_in_config_and_on_the_command_line():
    with pytest.raises(ValidationError, match="traffic"):
        load_settings(environ={"FEEDLOOP_SIMULATE__TRAFFIC": "spiky"})
    assert build_parser().parse_args(["simulate", "--traffic", "bursty"]).traffic == "bursty"
    assert build_parser().parse_args(["simulate"]).traffic is None
    with pytest.raises(UsageError):
        build_parser().parse_args(["simulate", "--traffic", "spiky"])
