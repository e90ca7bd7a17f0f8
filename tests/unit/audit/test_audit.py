"""The ground-truth audit scorer on hand-built worlds and lists, and the gate-vs-truth rule."""

from __future__ import annotations

import numpy as np
import pytest

from feedloop.ops.audit import agreement, ground_truth_ndcg, lightgbm_scores, pool_ndcg
from feedloop.ops.simulate import Ids, World

LOG2_3, LOG2_5 = np.log2(3), np.log2(5)
GAINS = (0.25, 0.5, 0.75, 0.9)  # items 0..3: sigmoid(utility - 1) for user 0


def _world() -> World:
    """One tenant, two users with even tastes (taste term 1.2 * ln 2), four items on one topic, no follows and
    neutral authors: an item's quality alone sets its gain, so the gains are exactly GAINS."""
    logits = np.log(np.array(GAINS) / (1 - np.array(GAINS)))   # sigmoid(logit) = gain
    quality = (logits + 1 - 1.2 * np.log(2)) / 0.6
    return World(tenants=("acme",), user_tenant=np.zeros(2, int), user_activity=np.ones(2),
                 user_prefs=np.full((2, 2), 0.5), item_tenant=np.zeros(4, int), item_topic=np.zeros(4, int),
                 item_quality=quality, item_popularity=np.ones(4), item_author=np.zeros(4, np.int64),
                 item_created=np.zeros(4), author_tenant=np.zeros(1, int), author_quality=np.zeros(1),
                 follows=np.zeros((2, 1), bool))


def _lists(rows: list[tuple[str, int, int, int]]) -> dict[str, np.ndarray]:
    """rows of (request, user, item, position) as the holdout holds them (string ids)."""
    ids = Ids(_world())
    return {"request_ids": np.array([r[0] for r in rows], dtype=object),
            "user_ids": np.array([ids.user(r[1]) for r in rows], dtype=object),
            "item_ids": np.array([ids.item(r[2]) for r in rows], dtype=object),
            "positions": np.array([r[3] for r in rows])}


def _score(scores: dict[str, list[float]], rows) -> dict[str, float]:
    world = _world()
    result = ground_truth_ndcg(**_lists(rows), scores={k: np.array(v) for k, v in scores.items()}, world=world,
                               ids=Ids(world))
    return result.ndcg | {"lists": result.lists}


WORST_FIRST = [("r1", 0, 0, 1), ("r1", 0, 1, 2), ("r1", 0, 2, 3), ("r1", 0, 3, 4)]
IDEAL = 0.9 + 0.75 / LOG2_3 + 0.5 / 2 + 0.25 / LOG2_5


def test_the_world_built_here_has_the_gains_the_hand_computations_use():
    from feedloop.ops.simulate import true_gain

    assert true_gain(_world(), 0, np.arange(4)) == pytest.approx(GAINS, abs=1e-12)


@pytest.mark.parametrize(("score", "expected"), [
    pytest.param([1, 2, 3, 4], 1.0, id="score-in-gain-order-is-the-ideal"),
    pytest.param([4, 3, 2, 1], (0.25 + 0.5 / LOG2_3 + 0.75 / 2 + 0.9 / LOG2_5) / IDEAL, id="reversed"),
    pytest.param([0, 0, 0, 0], (0.25 + 0.5 / LOG2_3 + 0.75 / 2 + 0.9 / LOG2_5) / IDEAL,
                 id="ties-keep-the-logged-order"),
    pytest.param([0, 0, 5, 9], (0.9 + 0.75 / LOG2_3 + 0.25 / 2 + 0.5 / LOG2_5) / IDEAL,
                 id="best-two-on-top-then-ties-in-logged-order"),
])
def test_ndcg_of_a_rerank_against_hand_computed_values(score, expected):
    assert _score({"m": score}, WORST_FIRST)["m"] == pytest.approx(expected, abs=1e-12)


def test_minus_position_scores_the_logged_order_and_rows_may_come_in_any_order():
    shuffled = [WORST_FIRST[i] for i in (2, 0, 3, 1)]
    result = _score({"logged": [-r[3] for r in shuffled], "best": [GAINS[r[2]] for r in shuffled]}, shuffled)
    assert result["logged"] == pytest.approx((0.25 + 0.5 / LOG2_3 + 0.75 / 2 + 0.9 / LOG2_5) / IDEAL, abs=1e-12)
    assert result["best"] == pytest.approx(1.0)


def test_the_mean_is_over_lists_and_a_one_item_list_is_not_judged():
    rows = WORST_FIRST + [("r2", 1, 3, 1), ("r2", 1, 0, 2), ("r3", 1, 2, 1)]
    # r1 reversed: (0.25 + 0.5/log2 3 + 0.75/2 + 0.9/log2 5) / IDEAL; r2 already ideal: 1; r3 has one item
    result = _score({"m": [4, 3, 2, 1, 2, 1, 7]}, rows)
    assert result["lists"] == 2
    assert result["m"] == pytest.approx(((0.25 + 0.5 / LOG2_3 + 0.75 / 2 + 0.9 / LOG2_5) / IDEAL + 1.0) / 2)


def test_a_user_of_another_world_is_named_not_silently_skipped():
    world = _world()
    lists = _lists(WORST_FIRST) | {"user_ids": np.array(["acme-u999999"] * 4, dtype=object)}
    with pytest.raises(KeyError, match="acme-u999999.*not in the ground truth"):
        ground_truth_ndcg(**lists, scores={"m": np.zeros(4)}, world=world, ids=Ids(world))


def test_lightgbm_scores_read_the_named_columns_in_model_order():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    booster = lgb.train({"objective": "regression", "verbosity": -1, "min_data_in_leaf": 5}, lgb.Dataset(x, x[:, 0]),
                        num_boost_round=5)
    columns = {"f_noise": x[:, 1], "f_signal": x[:, 0], "other": np.zeros(400)}
    scores = lightgbm_scores(model_text=booster.model_to_string(), feature_columns=["f_signal", "f_noise"],
                             columns=columns)
    assert scores == pytest.approx(booster.predict(x.astype(np.float32)))
    with pytest.raises(KeyError, match="f_missing"):
        lightgbm_scores(model_text=booster.model_to_string(), feature_columns=["f_signal", "f_missing"],
                        columns=columns)


@pytest.mark.parametrize(("promoted", "candidate", "champion", "expected"), [
    pytest.param(True, 0.70, 0.65, "agree", id="promoted-a-truly-better-candidate"),
    pytest.param(True, 0.60, 0.65, "disagree", id="promoted-a-truly-worse-candidate"),
    pytest.param(False, 0.60, 0.65, "agree", id="held-a-truly-worse-candidate"),
    pytest.param(False, 0.70, 0.65, "disagree", id="held-a-truly-better-candidate"),
    pytest.param(False, 0.655, 0.65, "level", id="held-within-the-margin"),
    pytest.param(True, 0.645, 0.65, "level", id="promoted-within-the-margin"),
    pytest.param(True, 0.70, None, None, id="first-model-has-no-champion"),
])
def test_the_gate_is_judged_against_the_truth(promoted, candidate, champion, expected):
    assert agreement(promoted=promoted, candidate=candidate, champion=champion) == expected


def test_a_difference_exactly_at_the_margin_is_not_level():
    assert agreement(promoted=False, candidate=0.75, champion=0.5, margin=0.25) == "disagree"
    assert agreement(promoted=False, candidate=0.75, champion=0.5, margin=0.5) == "level"


def test_the_pool_audit_takes_each_rankers_top_k_of_the_whole_pool_over_the_pools_best():
    """Two requests, pools of 4 and 3 items, k = 2: a ranker is judged on the 2 items it would have shown of the
    pool, not on how it orders items another ranker chose; ties keep the pool's order."""
    world = _world()
    users, offsets, items = np.array([0, 1]), np.array([0, 4, 7]), np.array([0, 1, 2, 3, 3, 0, 1])
    best2 = [0.9 + 0.75 / LOG2_3, 0.9 + 0.5 / LOG2_3]  # each pool's best 2
    result = pool_ndcg(users=users, offsets=offsets, items=items, world=world, k=2, scores={
        "truth": np.array([1, 2, 3, 4, 9, 1, 2.0]),
        "worst": np.array([4, 3, 2, 1, 1, 9, 2.0]),
        "ties": np.zeros(7)})
    assert result.lists == 2
    assert result.ndcg["truth"] == pytest.approx(1.0)
    worst_two = 0.25 + 0.5 / LOG2_3
    assert result.ndcg["worst"] == pytest.approx((worst_two / best2[0] + worst_two / best2[1]) / 2)
    assert result.ndcg["ties"] == pytest.approx((worst_two / best2[0] + (0.9 + 0.25 / LOG2_3) / best2[1]) / 2)
