"""Model selection on the validation day: position-debiased NDCG@k and early stopping with a floor of trees.

Both run inside LightGBM's boosting loop, so they are priced against bare LightGBM (bench/train.py): the
metric sorts each list in a (lists, size) matrix per distinct list size instead of one lexsort over the
whole day, and it is computed only on the rounds whose score can decide the outcome.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Feval = Callable[[np.ndarray, object], tuple[str, float, bool]]


def ipw_ndcg(group_sizes_: np.ndarray, labels: np.ndarray, weights: np.ndarray, k: int = 10) -> Feval:
    """LightGBM feval: NDCG@k with position-debiased gains (2^label - 1) x inverse propensity, pooled over lists.

    Click labels favour whatever the logging policy put on top; re-weighting clicks by how
    unlikely their position was to be examined makes the validation score track relevance. The
    normaliser is summed over lists (as feedloop.training.counterfactual's debiased NDCG): per list, the one
    click most lists hold has its weight in both DCG and ideal DCG, so it cancels and early stopping
    would pick the rounds that best copy the logger's order.

    Ties keep row order (a stable sort) and each list's DCG adds its top k in rank order, so the value is
    bit-for-bit the one a lexsort over the whole day gives (tests/unit/train/test_selection.py).
    """
    sizes = np.asarray(group_sizes_, dtype=np.int64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    gains = (np.exp2(labels) - 1.0) * weights
    buckets = []  # per distinct list size: which lists, their rows as a (lists, size) matrix, their gains, discounts
    for size in np.unique(sizes[sizes > 0]):
        lists = np.flatnonzero(sizes == size)
        rows = starts[lists][:, None] + np.arange(size)
        buckets.append((lists, rows, gains[rows], 1.0 / np.log2(np.arange(min(int(size), k)) + 2.0)))

    def dcg(order_key: np.ndarray) -> np.ndarray:
        per_list = np.zeros(len(sizes))
        for lists, rows, list_gains, discount in buckets:
            top = np.argsort(-order_key[rows], axis=1, kind="stable")[:, :len(discount)]
            ranked = np.take_along_axis(list_gains, top, axis=1) * discount
            total = np.zeros(len(lists))
            for column in ranked.T:  # rank by rank, as a running sum over the ranked list adds them
                total += column
            per_list[lists] = total
        return per_list

    ideal = float(dcg(gains).sum())

    def feval(preds: np.ndarray, _data: object) -> tuple[str, float, bool]:
        return f"ipw_ndcg@{k}", float(dcg(preds).sum() / ideal) if ideal > 0 else 0.0, True

    return feval


class EarlyStopping:
    """LightGBM callback: early stopping on `metric` over the validation set that keeps at least `min_rounds` trees.

    Click-based validation scores on one day are noisy and, at small scale, can peak at the very
    first tree while relevance keeps improving; the floor keeps a useful model, and after it the
    best iteration wins as usual. Scores below the floor decide nothing, so the metric is computed
    only from the floor on (and on the last round, whose score is reported when no round reaches the
    floor). Pass no feval to lgb.train: this callback evaluates the metric itself.
    """

    order = 30              # lgb.train runs callbacks after each round in this order
    before_iteration = False

    def __init__(self, metric: Feval, *, patience: int, min_rounds: int):
        self.metric, self.patience, self.min_rounds = metric, patience, min_rounds
        self.best_score, self.best_iteration, self.best_evals = float("-inf"), 0, []
        self.scores: dict[int, tuple[str, float]] = {}  # round index -> (metric name, score), evaluated rounds only

    def __call__(self, env) -> None:
        i = env.iteration
        last = i + 1 == env.end_iteration
        if i + 1 < self.min_rounds and not last:
            return
        evals = env.model.eval_valid(self.metric)
        self.scores[i] = (evals[0][1], evals[0][2])
        if i + 1 < self.min_rounds:
            return
        score = evals[0][2]
        if score > self.best_score:
            self.best_score, self.best_iteration, self.best_evals = score, i, evals
        elif i - self.best_iteration >= self.patience or last:
            import lightgbm as lgb

            raise lgb.callback.EarlyStopException(self.best_iteration, self.best_evals)

    def metric_at(self, best_iteration: int) -> dict[str, float]:
        """The validation score of the kept model: `best_iteration` as lgb.train sets it (0: the last round)."""
        name, score = self.scores[best_iteration - 1] if best_iteration > 0 else self.scores[max(self.scores)]
        return {name: round(float(score), 6)}
