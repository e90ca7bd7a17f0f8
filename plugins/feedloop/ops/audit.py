"""Ground-truth audit: how well rankers order the requests' candidates, by the hidden utility.

Why: every metric the platform computes is estimated from logged clicks, and clicks favour whoever
logged them. On simulated traffic the utility that generated the clicks is known, so each ranker
can be judged by it instead, with gains sigmoid(utility - 1) (`simulate.true_gain`): on each request's
whole candidate pool (`pool_ndcg`: the list it would have served, over the pool's best), or reranking
the items a request showed (`ground_truth_ndcg`, over the best order of those items; biased against
whoever chose them). Pure functions over arrays: the demo, bench scripts and tests feed them what they have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from feedloop.ops.simulate import NDCG_K, Ids, World, ndcg_at_k, true_gain

LEVEL_MARGIN = 0.01  # |GT(candidate) - GT(champion)| below this: neither model is truly better


@dataclass(frozen=True)
class GroundTruthNdcg:
    lists: int                  # requests judged (two or more shown items)
    ndcg: dict[str, float]      # ranker name -> mean ground-truth NDCG@k over those requests


def ground_truth_ndcg(*, request_ids: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray,
                      positions: np.ndarray, scores: Mapping[str, np.ndarray], world: World, ids: Ids,
                      k: int = NDCG_K) -> GroundTruthNdcg:
    """Mean ground-truth NDCG@k of each ranker's order of the shown lists (rows = shown items).

    Ties in a score keep the logged order (position), so `-position` as a score is the logged order
    itself. A one-item list has no order to judge and is left out.
    """
    users, items = _world_index(ids.user_index, user_ids, "user"), _world_index(ids.item_index, item_ids, "item")
    order = np.lexsort((np.asarray(positions), np.asarray(request_ids, dtype=object)))
    requests = np.asarray(request_ids, dtype=object)[order]
    starts = np.flatnonzero(np.r_[True, requests[1:] != requests[:-1]])
    groups = [g for g in np.split(order, starts[1:]) if len(g) >= 2]
    sums = dict.fromkeys(scores, 0.0)
    for rows in groups:
        gains = true_gain(world, int(users[rows[0]]), items[rows])
        for name, score in scores.items():
            ranked = np.argsort(-np.asarray(score)[rows], kind="stable")  # rows are in logged order: ties keep it
            sums[name] += ndcg_at_k(gains[ranked], gains, k)
    return GroundTruthNdcg(len(groups), {name: s / len(groups) if groups else float("nan")
                                         for name, s in sums.items()})


def lightgbm_scores(*, model_text: str, feature_columns: list[str], columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """A LightGBM model's scores for rows whose features are `columns[feature_columns]`, in model order."""
    missing = [c for c in feature_columns if c not in columns]
    if missing:
        raise KeyError(f"the rows lack feature column(s) {', '.join(missing)}")
    matrix = np.column_stack([np.asarray(columns[c], dtype=np.float32) for c in feature_columns])
    return lightgbm_matrix_scores(model_text=model_text, matrix=matrix)


def lightgbm_matrix_scores(*, model_text: str, matrix: np.ndarray) -> np.ndarray:
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text).predict(matrix)


def pool_ndcg(*, users: np.ndarray, offsets: np.ndarray, items: np.ndarray, scores: Mapping[str, np.ndarray],
              world: World, k: int = NDCG_K) -> GroundTruthNdcg:
    """Mean ground-truth NDCG@k of the top k each ranker picks from each request's whole candidate pool
    (request r: items[offsets[r]:offsets[r + 1]], scores aligned with items), over the pool's best k: the
    figure the simulator reports for the list a ranker served. Ties keep the pool's order."""
    sums = dict.fromkeys(scores, 0.0)
    for r, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        gains = true_gain(world, int(users[r]), items[a:b])
        for name, score in scores.items():
            top = np.argsort(-np.asarray(score[a:b]), kind="stable")[:k]
            sums[name] += ndcg_at_k(gains[top], gains, k)
    n = len(offsets) - 1
    return GroundTruthNdcg(n, {name: s / n if n else float("nan") for name, s in sums.items()})


def agreement(*, promoted: bool, candidate: float | None, champion: float | None,
              margin: float = LEVEL_MARGIN) -> str | None:
    """Did the gate's decision match the truth? agree | disagree | level (within `margin`); None: no champion.

    d = GT(candidate) - GT(champion): agree iff (promoted and d > 0) or (held and d < 0).
    """
    if candidate is None or champion is None:
        return None
    d = candidate - champion
    if abs(d) < margin:
        return "level"
    return "agree" if (d > 0) == promoted else "disagree"


def _world_index(index: Mapping[str, int], values: Any, what: str) -> np.ndarray:
    try:
        return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise KeyError(f"{what} {exc.args[0]!r} is not in the ground truth (another world seed?)") from None
