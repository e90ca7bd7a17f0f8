"""When the simulated requests come and how eager their users are to click: steady or bursty traffic.

Why: steady traffic (uniform request times, the same click rate every day, late events of a few hours)
is what the benchmarks were measured on and must not change. Bursty traffic is what production looks like
and what the ingest, validation and retraining must survive: heavy-tailed hour volumes around a daily
curve, empty hours, click rates that swing from day to day and events arriving up to two days late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedloop.core.config import Traffic

DAY_S = 86400
# Relative request rate by hour of the day (UTC): quiet nights, a flat working day, busy evenings.
DIURNAL = np.array([0.45, 0.30, 0.20, 0.15, 0.12, 0.15, 0.30, 0.55, 0.80, 0.90, 0.95, 1.00,
                    1.05, 1.00, 0.95, 0.95, 1.00, 1.10, 1.30, 1.55, 1.75, 1.70, 1.30, 0.80])
HOUR_SIGMA = 1.0           # an hour's volume is the curve times lognormal(0, HOUR_SIGMA): heavy-tailed
EMPTY_HOUR_SHARE = 0.03    # hours with no request at all (an outage upstream, a dead app release)
CTR_SWING = 0.4            # the click rates of any two days differ by at most this share
LATE_MAX_HOURS: dict[Traffic, float] = {"steady": 6.0, "bursty": 48.0}  # a late event's extra delay: 1 h to this
_BURSTY_STREAM = 2         # seeds the bursty draws apart from the world (seed) and the users (seed + 1)


@dataclass(frozen=True)
class DayTraffic:
    """One day's request times and the factor on its click probabilities."""

    seconds: np.ndarray    # [n] sorted, seconds into the day
    click_factor: float


def steady_day(rng: np.random.Generator, n: int) -> DayTraffic:
    """Uniform request times from the simulator's own generator: the draws the benchmarks were measured on.

    The click factor is exactly 1.0, and p * 1.0 == p in floating point, so the clicks are unchanged too."""
    return DayTraffic(np.sort(rng.uniform(0, DAY_S, n)), 1.0)


def bursty_day(seed: int, day: int, n: int) -> DayTraffic:
    """Heavy-tailed hours around the daily curve and a day's click mood, from a generator of (seed, day) only:
    a day looks the same however the days before it were stepped through."""
    rng = np.random.default_rng((seed, _BURSTY_STREAM, day))
    weights = hour_weights(rng)
    hours = rng.choice(24, n, p=weights)
    seconds = np.sort(hours * 3600 + rng.uniform(0, 3600, n))
    return DayTraffic(seconds, click_factor(rng))


def hour_weights(rng: np.random.Generator) -> np.ndarray:
    """Each hour's share of the day's requests: the curve times a lognormal burst, some hours empty.

    Normalised to 1, so the day keeps its events_per_day while its hours swing."""
    weights = DIURNAL * rng.lognormal(0.0, HOUR_SIGMA, 24) * (rng.random(24) >= EMPTY_HOUR_SHARE)
    return weights / weights.sum()


def click_factor(rng: np.random.Generator) -> float:
    """Uniform around 1 with (1 + half) / (1 - half) = 1 + CTR_SWING: the widest day-to-day swing allowed."""
    half = CTR_SWING / (2 + CTR_SWING)
    return float(rng.uniform(1 - half, 1 + half))
