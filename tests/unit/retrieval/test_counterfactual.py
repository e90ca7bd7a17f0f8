"""Exposure-weighted recall on hand-computed values: weights, the pooled self-normalised ratio, paired intervals."""

from __future__ import annotations

import pyarrow as pa
import pytest

from feedloop.retrieval.counterfactual import exposure_weights, weighted_recall
from feedloop.training.counterfactual import Bootstrap

TENANT = {"a": "t", "b": "t", "c": "t", "x": "s"}
SHOWN = pa.table({"item_id": ["a", "b", "c", "x", "ghost"], "impressions": [8, 2, 2, 5, 3]})
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
