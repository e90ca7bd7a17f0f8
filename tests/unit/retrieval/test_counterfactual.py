"""Exposure-weighted recall on hand-computed values: weights, the pooled self-normalised ratio, paired intervals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from feedloop.retrieval.counterfactual import examined, exposure_weights, on_support, weighted_recall
from feedloop.retrieval.index import TenantIndex
from feedloop.training.counterfactual import Bootstrap

TENANT = {"a": "t", "b": "t", "c": "t", "x": "s"}
SHOWN = {"a": 8, "b": 2, "c": 2, "x": 5, "ghost": 3}
RELEVANT = {"u1": {"a", "b"}, "u2": {"c"}}
LISTS = {"model": {"u1": ["a", "z"], "u2": ["c"]}, "popularity": {"u1": ["b"], "u2": ["a"]}}


def test_an_item_shown_more_than_the_tenants_average_weighs_less_and_a_rare_one_more_up_to_the_clip():
    # tenant t: 12 impressions over 3 shown items, 4 on average; tenant s's only item is its average
    assert exposure_weights(SHOWN, TENANT, max_weight=10) == {"a": 0.5, "b": 2.0, "c": 2.0, "x": 1.0}
    assert exposure_weights(SHOWN, TENANT, max_weight=1.5) == {"a": 0.5, "b": 1.5, "c": 1.5, "x": 1.0}


def test_recall_is_the_weight_of_the_engaged_items_retrieved_over_the_weight_of_all_pooled_over_users():
    weights = exposure_weights(SHOWN, TENANT, max_weight=10)
    got = weighted_recall(lists=LISTS, relevant=RELEVANT, weights=weights, ks=(1,), paired=[("model", "popularity")],
                          max_weight=10, bootstrap=Bootstrap(resamples=1000, seed=7))
    # model: u1 retrieves a (0.5), u2 c (2) over 2.5 + 2; popularity: u1 b (2), u2 nothing
    assert got.at["model"][1].value == pytest.approx(2.5 / 4.5)
    assert got.at["popularity"][1].value == pytest.approx(2 / 4.5)
    assert got.differences["model-popularity"][1].value == pytest.approx(0.5 / 4.5)
    # two users: a resample is {u1, u1} (-1.5 / 2.5), {u2, u2} (2 / 2) or one of each, each pair with p 1/4
    assert (got.differences["model-popularity"][1].low, got.differences["model-popularity"][1].high) == \
        pytest.approx((-0.6, 1.0))
    assert got.users == 2


def test_an_engaged_item_not_shown_that_day_weighs_the_clip():
    got = weighted_recall(lists={"m": {"u": ["d"]}}, relevant={"u": {"d", "a"}}, weights={"a": 0.5}, ks=(1,),
                          paired=[], max_weight=10, bootstrap=Bootstrap(resamples=200))
    assert got.at["m"][1].value == pytest.approx(10 / 10.5)


def test_the_same_seed_gives_the_same_interval():
    def run():
        return weighted_recall(lists=LISTS, relevant=RELEVANT, weights={"a": 0.5, "b": 2, "c": 2}, ks=(1, 2),
                               paired=[("model", "popularity")], max_weight=10,
                               bootstrap=Bootstrap(resamples=300, seed=3)).to_dict()
    assert run() == run()


def test_examination_mass_sums_the_examination_of_each_impressions_position():
    shown = pa.table({"item_id": ["a", "a", "b", "c"], "surface": ["feed", "feed", "feed", "search"],
                      "position": [1, 4, 9, 2], "impressions": [2, 1, 3, 5]})
    curves = {"feed": {1: 1.0, 4: 0.5, 8: 0.2}}
    # a: 2 x 1 + 1 x 0.5; b: position 9 beyond the curve takes its smallest value; c: no curve for search, 1 each
    assert examined(shown, curves) == {"a": 2.5, "b": pytest.approx(0.6), "c": 5.0}


def test_on_the_support_each_model_ranks_only_the_items_its_tenant_showed():
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    index = TenantIndex.build(vectors, ["a", "b", "c", "d"], ["t"] * 4, m=4, ef_construction=8, ef_search=8)
    query = lambda users: np.array([[0, 1]] * len(users), dtype=np.float32)  # noqa: E731  (prefers c, d, b, a)
    lists = on_support(models={"m": (query, index)}, shown={"t": ["a", "b", "d"]}, popularity={"a": 5, "b": 9},
                       user_tenant={"u": "t"}, k=2)
    assert lists == {"m": {"u": ["d", "b"]}, "popularity": {"u": ["b", "a"]}}
