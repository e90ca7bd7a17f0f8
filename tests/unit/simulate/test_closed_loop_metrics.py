"""Ground-truth NDCG@10 and online CTR of what the simulated users were shown, and the simulator's ranker path."""

from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
import orjson
import pytest

from feedloop.core.config import load_settings
from feedloop.serving.client import Ranked
from feedloop.ops.simulate import LEGACY, DayStats, SimulationReport, Simulator, ndcg_at_k, true_gain

DISCOUNT = 1 / np.log2(np.arange(2, 12))


@pytest.mark.parametrize(("shown", "pool", "expected"), [
    pytest.param([0.9, 0.5, 0.1], [0.1, 0.5, 0.9], 1.0, id="best-order-of-the-whole-pool-is-1"),
    pytest.param([0.1, 0.5, 0.9], [0.9, 0.5, 0.1], (0.1 + 0.5 / np.log2(3) + 0.9 / 2) / (0.9 + 0.5 / np.log2(3) + 0.1 / 2),
                 id="reversed-order"),
    pytest.param([0.5], [0.9, 0.5], 0.5 / (0.9 + 0.5 / np.log2(3)), id="ideal-counts-pool-items-not-shown"),
    pytest.param([0.0, 0.0], [0.0, 0.0, 0.0], 0.0, id="no-gain-anywhere-is-0-not-nan"),
])
def test_ndcg_against_hand_computed_values(shown, pool, expected):
    assert ndcg_at_k(np.array(shown), np.array(pool)) == pytest.approx(expected, abs=1e-12)


def test_ndcg_counts_only_the_first_k_positions():
    pool = np.linspace(1.0, 0.05, 20)
    shown = np.concatenate([pool[:10], np.zeros(10)])  # the best 10 first: what follows position 10 does not count
    assert ndcg_at_k(shown, pool) == pytest.approx(1.0)
    swapped = shown.copy()
    swapped[[9, 10]] = swapped[[10, 9]]  # the 10th-best item pushed to position 11
    assert ndcg_at_k(swapped, pool) == pytest.approx(1 - pool[9] * DISCOUNT[9] / float(pool[:10] @ DISCOUNT))


def test_day_stats_pool_clicks_over_impressions_and_average_ndcg_over_lists():
    stats = DayStats("2026-11-20")
    stats.add(version=LEGACY, impressions=12, clicks=3, ndcg=0.5, legacy_ndcg=0.5)
    stats.add(version="v1", impressions=8, clicks=0, ndcg=0.9, legacy_ndcg=0.4)
    assert (stats.lists, stats.impressions, stats.clicks) == (2, 20, 3)
    assert stats.by_version == {LEGACY: 1, "v1": 1}
    assert stats.ctr == pytest.approx(3 / 20)
    assert stats.ndcg == pytest.approx(0.7) and stats.legacy_ndcg == pytest.approx(0.45)


def _simulate(ranker=None, days=1, events_per_day=3000):
    settings = load_settings(environ={})
    sim = Simulator(settings, start=date(2026, 11, 1), days=days, events_per_day=events_per_day, seed=3, ranker=ranker)
    report = SimulationReport(start=date(2026, 11, 1), days=days)
    return sim, [orjson.loads(r.value) for r in sim.records(report)], report


def test_the_report_counts_exactly_the_lists_impressions_and_clicks_produced():
    _, events, report = _simulate(days=2)
    kinds = Counter(e["event_type"] for e in events)
    stats = list(report.per_day.values())
    assert [s.day for s in stats] == ["2026-11-01", "2026-11-02"]
    assert sum(s.impressions for s in stats) == kinds["impression"]
    assert sum(s.clicks for s in stats) == kinds["click"]
    assert sum(s.lists for s in stats) == len({e["request_id"] for e in events if e["event_type"] == "impression"})
    assert all(s.by_version == {LEGACY: s.lists} for s in stats)
    assert all(s.ndcg == pytest.approx(s.legacy_ndcg) for s in stats)  # the legacy policy served: same lists


class Oracle:
    """A ranker that knows the hidden utility: the best possible order, never an exploration shuffle."""

    def __init__(self):
        self.sim: Simulator | None = None
        self.bodies: list[dict] = []
        self.served: dict[str, list[str]] = {}

    def __call__(self, body: dict) -> Ranked:
        sim = self.sim
        index = {sim.ids.item(i): i for i in range(len(sim.world.item_topic))}
        user = int(body["user_id"].rsplit("-u", 1)[1])
        items = np.array([index[c["item_id"]] for c in body["candidates"]])
        best = items[np.argsort(-true_gain(sim.world, user, items), kind="stable")][:body["limit"]]
        self.bodies.append(body)
        self.served[body["request_id"]] = [sim.ids.item(int(i)) for i in best]
        return Ranked(self.served[body["request_id"]], "oracle-v1", explore=False)


def test_a_ranked_day_produces_only_outcomes_of_the_ranked_lists_and_scores_them_against_the_truth():
    oracle = Oracle()
    settings = load_settings(environ={})
    oracle.sim = sim = Simulator(settings, start=date(2026, 11, 1), days=1, events_per_day=3000, seed=3, ranker=oracle)
    report = SimulationReport(start=date(2026, 11, 1), days=1)
    events = [orjson.loads(r.value) for r in sim.records(report)]
    stats = report.per_day["2026-11-01"]
    assert stats.by_version == {"oracle-v1": len(oracle.bodies)} and stats.lists == len(oracle.bodies)
    assert stats.ndcg == pytest.approx(1.0) and stats.legacy_ndcg < 0.8
    assert "impression" not in {e["event_type"] for e in events}  # the ranker logs those
    assert report.pod_impressions == stats.impressions == sum(b["limit"] for b in oracle.bodies)
    # every outcome is of an item the ranker showed in that request, at the position it gave
    assert events and all(oracle.served[e["request_id"]][e["position"] - 1] == e["item_id"] for e in events)
    body = oracle.bodies[0]
    assert body["limit"] == settings.simulate.list_size and len(body["candidates"]) == 3 * body["limit"]
    assert body["ts"].startswith("2026-11-01T") and body["ts"].endswith("Z")
    _, _, legacy = _simulate()
    assert stats.ctr > legacy.per_day["2026-11-01"].ctr + 0.02  # same users and request times: better lists, more clicks


def test_a_ranker_without_a_model_falls_back_to_the_legacy_policy_event_for_event():
    _, legacy, _ = _simulate()
    calls = []
    _, fallback, report = _simulate(ranker=lambda body: calls.append(body) or None)
    assert calls and fallback == legacy
    assert report.per_day["2026-11-01"].by_version == {LEGACY: len(calls)} and report.pod_impressions == 0
