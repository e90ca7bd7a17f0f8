"""The /recommend arm of the simulator: which requests take it, what falls back, and how both arms are judged."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import orjson
import pytest

from feedloop.core.config import load_settings
from feedloop.ops.simulate import POOL, RECOMMEND, ArmStats, SimulationReport, Simulator, day_table, true_gain
from feedloop.ops.simulate.arms import takes_recommend
from feedloop.serving.client import Ranked, RankingError

START = date(2026, 11, 1)


class CatalogOracle:
    """Knows the hidden utility and the whole catalog: the user's truly best items of the tenant's catalog at the
    request's time, the best a /recommend could do."""

    def __init__(self, *, version: str = "oracle-r1", foreign: bool = False):
        self.sim: Simulator | None = None
        self.version, self.foreign = version, foreign
        self.served: dict[str, list[str]] = {}

    def __call__(self, body: dict) -> Ranked:
        w, ids = self.sim.world, self.sim.ids
        user = ids.user_index[body["user_id"]]
        now_s = (datetime.fromisoformat(body["ts"]) - datetime.fromisoformat(f"{START}T00:00:00+00:00")).total_seconds()
        tenant = w.user_tenant[user] if not self.foreign else (w.user_tenant[user] + 1) % len(w.tenants)
        catalog = np.flatnonzero((w.item_tenant == tenant) & (w.item_created <= now_s))
        best = catalog[np.argsort(-true_gain(w, user, catalog), kind="stable")][:body["limit"]]
        self.served[body["request_id"]] = [ids.item(int(i)) for i in best]
        return Ranked(self.served[body["request_id"]], "ranker-v1", explore=False, retriever_version=self.version)


def _first_k(body: dict) -> Ranked:
    """/rank as the feed service's own order: the first `limit` candidates."""
    return Ranked([c["item_id"] for c in body["candidates"][:body["limit"]]], "ranker-v1", explore=False)


def _run(recommender, *, share: float = 0.5, ranker=_first_k):
    settings = load_settings(environ={})
    sim = Simulator(settings, start=START, days=1, events_per_day=3000, seed=3, ranker=ranker,
                    recommender=recommender, recommend_share=share)
    if recommender is not None and hasattr(recommender, "sim"):
        recommender.sim = sim
    report = SimulationReport(start=START, days=1)
    events = [orjson.loads(r.value) for r in sim.records(report)]
    return events, report.per_day[str(START)], report


def test_the_split_is_a_stable_share_of_request_ids():
    ids = [f"req-20261101-{r:07d}" for r in range(20_000)]
    taken = [takes_recommend(i, 0.3) for i in ids]
    assert sum(taken) / len(ids) == pytest.approx(0.3, abs=0.015)
    assert taken == [takes_recommend(i, 0.3) for i in ids]
    assert not any(takes_recommend(i, 0.0) for i in ids) and all(takes_recommend(i, 1.0) for i in ids)


def test_recommend_lists_are_judged_on_the_catalog_and_pool_lists_on_their_pool():
    oracle = CatalogOracle()
    events, stats, report = _run(oracle)
    rec, pool = stats.arms[RECOMMEND], stats.arms[POOL]
    assert rec.lists == len(oracle.served) and rec.lists + pool.lists == stats.lists
    assert rec.lists / stats.lists == pytest.approx(0.5, abs=0.08)
    assert rec.catalog_ndcg == pytest.approx(1.0) and rec.best_recall == pytest.approx(1.0)
    assert pool.catalog_ndcg < 0.8 and pool.best_recall < 0.5  # 36 random candidates rarely hold the best 10
    assert stats.judged == pool.lists  # the pool columns (NDCG@10, legacy) average the pool arm's lists only
    assert stats.by_version == {"ranker-v1": stats.lists}
    assert report.pod_impressions == stats.impressions and "impression" not in {e["event_type"] for e in events}
    outcomes = [e for e in events if e["request_id"] in oracle.served]
    assert outcomes and all(oracle.served[e["request_id"]][e["position"] - 1] == e["item_id"] for e in outcomes)
    assert "best-10 recall" in day_table([stats])[0] and "1.000 vs" in day_table([stats])[1]


def test_with_nothing_to_recommend_every_request_goes_to_rank_event_for_event():
    plain, plain_stats, _ = _run(None)
    asked = []
    fallback, stats, _ = _run(lambda body: asked.append(body) or None)
    assert asked and fallback == plain
    assert stats.arms[POOL].lists == stats.lists == stats.judged and RECOMMEND not in stats.arms
    assert stats.ndcg == pytest.approx(plain_stats.ndcg) and not plain_stats.arms
    body = asked[0]
    assert set(body) >= {"tenant_id", "user_id", "surface", "device", "request_id", "ts", "limit"}
    assert "candidates" not in body and body["limit"] == load_settings(environ={}).simulate.list_size


def test_a_recommend_list_of_another_tenants_items_is_refused_naming_the_request():
    with pytest.raises(RankingError, match=r"not in the tenant's catalog"):
        _run(CatalogOracle(foreign=True), share=1.0)


def test_a_recommender_needs_a_share():
    with pytest.raises(ValueError, match="recommend_share"):
        _run(CatalogOracle(), share=0.0)


def test_arm_stats_average_over_lists():
    arm = ArmStats()
    catalog, gains = np.arange(20), np.linspace(1.0, 0.05, 20)
    arm.add(catalog[:12], gains[:12], catalog, gains)       # the best 12 in order
    arm.add(catalog[10:], gains[10:], catalog, gains)       # none of the best 10
    assert arm.lists == 2 and arm.best_recall == pytest.approx(0.5)
    assert arm.catalog_ndcg == pytest.approx((1.0 + float(gains[10:20] @ (1 / np.log2(np.arange(2, 12))))
                                              / float(gains[:10] @ (1 / np.log2(np.arange(2, 12))))) / 2)
