"""selection.ipw_ndcg and selection.EarlyStopping choose exactly what the per-round feval + callback did before.

The reference below is the implementation train.py used until issue 20 (one lexsort over the whole
validation day, the metric computed every round through lgb.train's feval, record_evaluation for the
reported score), kept verbatim as the oracle: same metric bits, same best iteration, same model text.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from feedloop.core.config import TrainSettings
from feedloop.features import definitions as features
from feedloop.training import selection, train


def reference_ipw_ndcg(group_sizes_: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: int = 10):
    group = np.repeat(np.arange(len(group_sizes_)), group_sizes_)
    starts = np.r_[0, np.cumsum(group_sizes_)[:-1]]
    gains = (np.exp2(labels) - 1.0) * weights

    def dcg(order_key: np.ndarray) -> np.ndarray:
        order = np.lexsort((-order_key, group))
        rank = np.arange(len(order)) - starts[group[order]]
        discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        return np.bincount(group[order], gains[order] * discount, len(group_sizes_))

    ideal = float(dcg(gains).sum())

    def feval(preds: np.ndarray, _data) -> tuple[str, float, bool]:
        return f"ipw_ndcg@{k}", float(dcg(preds).sum() / ideal) if ideal > 0 else 0.0, True

    return feval


def reference_early_stopping(patience: int, min_rounds: int):
    best = {"score": float("-inf"), "iteration": 0, "evals": []}

    def callback(env) -> None:
        score = env.evaluation_result_list[0][2]
        i = env.iteration
        if i + 1 < min_rounds:
            return
        if score > best["score"]:
            best.update(score=score, iteration=i, evals=env.evaluation_result_list)
        elif i - best["iteration"] >= patience or i + 1 == env.end_iteration:
            raise lgb.callback.EarlyStopException(best["iteration"], best["evals"])

    callback.order = 30
    return callback


def split(rng: np.random.Generator, lists: int) -> pa.Table:
    """A fixed synthetic split: lists of 1-25 rows (mostly 25), clicks that follow two of the features."""
    sizes = np.where(rng.random(lists) < 0.8, 25, rng.integers(1, 25, lists))
    n = int(sizes.sum())
    x = rng.random((n, len(features.FEATURE_NAMES))).astype(np.float32)
    x[:, 0] = np.round(x[:, 0], 1)  # ties in a feature -> ties in predictions
    label = (rng.random(n) < 0.05 + 0.3 * x[:, 1] * x[:, 2]).astype(np.int32) * rng.integers(1, 4, n).astype(np.int32)
    columns = {"request_id": np.repeat([f"r{i}" for i in range(lists)], sizes), "label": label,
               "label_binary": (label > 0).astype(np.int32), "weight": (1 + 4 * rng.random(n)).astype(np.float32)}
    columns.update({features.column(name): x[:, j] for j, name in enumerate(features.FEATURE_NAMES)})
    return pa.table(columns)


TRAIN, VALID = split(np.random.default_rng(3), 160), split(np.random.default_rng(4), 60)


def metric_inputs(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (train.group_sizes(table["request_id"]), table["label"].to_numpy().astype(np.float64),
            table["weight"].to_numpy().astype(np.float64))


def reference_fit(cfg: TrainSettings, objective: str):
    dtrain = train.to_lgb_dataset(TRAIN, objective, max_bin=cfg.max_bin)
    dvalid = train.to_lgb_dataset(VALID, objective, reference=dtrain, max_bin=cfg.max_bin)
    evals: dict = {}
    booster = lgb.train(
        train.lgb_params(cfg, objective), dtrain, num_boost_round=cfg.num_boost_round, valid_sets=[dvalid],
        valid_names=["valid"], feval=reference_ipw_ndcg(*metric_inputs(VALID)),
        callbacks=[reference_early_stopping(cfg.early_stopping_rounds, cfg.min_boost_round),
                   lgb.record_evaluation(evals)],
    )
    valid_metric = {k: round(float(v[booster.best_iteration - 1]), 6) for k, v in evals.get("valid", {}).items()}
    return booster, valid_metric


def test_the_metric_is_bit_for_bit_the_lexsort_one_on_ties_short_lists_and_k_above_a_list_size():
    sizes, labels, weights = metric_inputs(VALID)
    assert len(np.unique(sizes)) > 5
    rng = np.random.default_rng(5)
    for k in (1, 3, 10, 30):
        new, old = selection.ipw_ndcg(sizes, labels, weights, k=k), reference_ipw_ndcg(sizes, labels, weights, k=k)
        for preds in (rng.random(len(labels)), np.round(rng.random(len(labels)), 1), np.zeros(len(labels)), labels):
            assert new(preds, None) == old(preds, None)


@pytest.mark.parametrize(("objective", "rounds", "floor", "patience"), [
    pytest.param("lambdarank", 120, 10, 5, id="stops-after-the-floor-when-patience-runs-out"),
    pytest.param("lambdarank", 40, 5, 40, id="patience-longer-than-the-run-stops-on-the-last-round"),
    pytest.param("lambdarank", 9, 2, 5, id="a-best-last-round-ends-the-run-without-a-stop"),
    pytest.param("lambdarank", 8, 20, 5, id="fewer-rounds-than-the-floor-keeps-every-round"),
    pytest.param("binary", 60, 10, 5, id="binary-objective"),
])
def test_fit_keeps_the_same_rounds_model_and_score_as_the_per_round_feval(objective, rounds, floor, patience):
    cfg = TrainSettings(objective=objective, num_leaves=7, num_boost_round=rounds, min_boost_round=floor,
                        early_stopping_rounds=patience, min_data_in_leaf=5, learning_rate=0.2)
    expected, expected_metric = reference_fit(cfg, objective)

    dtrain = train.to_lgb_dataset(TRAIN, objective, max_bin=cfg.max_bin)
    dvalid = train.to_lgb_dataset(VALID, objective, reference=dtrain, max_bin=cfg.max_bin)
    booster, valid_metric = train.fit(cfg, objective, dtrain, dvalid, selection.ipw_ndcg(*metric_inputs(VALID)))

    assert booster.best_iteration == expected.best_iteration
    assert booster.current_iteration() == expected.current_iteration()
    assert booster.model_to_string(num_iteration=booster.best_iteration) == \
        expected.model_to_string(num_iteration=expected.best_iteration)
    assert valid_metric == expected_metric
