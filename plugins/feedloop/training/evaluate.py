"""Ranking metrics on the held-out day: AUC, NDCG@k, MAP and MRR per query group, overall and per segment.

Why vectorised numpy instead of a per-group loop: a day holds hundreds of thousands of ranked
lists and the candidate, the champion and the popularity baseline are all scored on the same
rows. Why pure: the gate and the report must be reproducible from the numbers alone.

Conventions: rows are ranked by score, descending, ties kept in row order (deterministic);
NDCG uses the graded label with gain 2^label - 1 and discount log2(rank + 1); MAP and MRR use the
binary label; NDCG, MAP and MRR average over the groups with at least one relevant row (the
`groups` support count); AUC pools all rows and is None when one class is missing.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from feedloop.contract.decisions import ScorerMetrics

NDCG_CUTOFFS = (1, 5, 10)
METRICS = ("auc", *(f"ndcg@{k}" for k in NDCG_CUTOFFS), "map", "mrr")


def ranking_metrics(*, label: np.ndarray, binary: np.ndarray, score: np.ndarray, group: np.ndarray) -> dict[str, Any]:
    """Every metric in METRICS plus the support: `rows`, `groups` (judged lists) and `lists` (all lists)."""
    label = np.asarray(label, dtype=np.float64)
    binary = np.asarray(binary, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    _, gid = np.unique(np.asarray(group), return_inverse=True)
    n_lists = int(gid.max()) + 1 if gid.size else 0
    out: dict[str, Any] = {"rows": int(label.size), "lists": n_lists, "auc": auc(binary=binary, score=score)}
    values = per_list(gain=np.exp2(label) - 1.0, binary=binary, score=score, gid=gid, n_lists=n_lists)
    for name, per in values.items():
        out[name] = _mean(per[~np.isnan(per)])
    out["groups"] = int((~np.isnan(values["map"])).sum())
    return out


def per_list(*, gain: np.ndarray, binary: np.ndarray | None, score: np.ndarray, gid: np.ndarray,
             n_lists: int) -> dict[str, np.ndarray]:
    """Per-list NDCG@k (from `gain`), and AP and RR unless `binary` is None, for lists 0 .. n_lists - 1
    (`gid`: the list of each row).

    NaN where a list does not count: no gain (NDCG) or no relevant row (AP, RR), or no rows at all.
    The gain is a parameter so a caller can weight it (position-debiased gains, feedloop.training.counterfactual).
    """
    gain = np.asarray(gain, dtype=np.float64)
    rank = rank_within_group(gid, score)
    out: dict[str, np.ndarray] = {}
    judged_ndcg = np.bincount(gid, weights=gain, minlength=n_lists) > 0
    for k, (dcg, idcg) in dcg_per_list(gain=gain, rank=rank, gid=gid, n_lists=n_lists).items():
        out[f"ndcg@{k}"] = np.divide(dcg, idcg, out=np.full(n_lists, np.nan), where=judged_ndcg)
    if binary is None:
        return out

    rel = np.asarray(binary) > 0
    n_rel = np.bincount(gid, weights=rel, minlength=n_lists)
    judged = n_rel > 0
    order = np.lexsort((rank, gid))  # rows in ranked order within each group
    g_sorted, rel_sorted, rank_sorted = gid[order], rel[order], rank[order]
    hits_before = _cumsum_within(g_sorted, rel_sorted.astype(np.float64))
    precision_at_hit = np.where(rel_sorted, hits_before / rank_sorted, 0.0)
    ap = np.bincount(g_sorted, weights=precision_at_hit, minlength=n_lists)
    out["map"] = np.divide(ap, n_rel, out=np.full(n_lists, np.nan), where=judged)
    first_hit = np.full(n_lists, np.inf)
    np.minimum.at(first_hit, gid[rel], rank[rel])
    out["mrr"] = np.divide(1.0, first_hit, out=np.full(n_lists, np.nan), where=judged)
    return out


def dcg_per_list(*, gain: np.ndarray, rank: np.ndarray, gid: np.ndarray,
                 n_lists: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{k: (DCG@k, ideal DCG@k)} per list, for rows at 1-based `rank` in their list (rank_within_group)."""
    ideal = _rank_within_group(gid, -gain)
    return {k: (np.bincount(gid, weights=np.where(rank <= k, gain / np.log2(rank + 1.0), 0.0), minlength=n_lists),
                np.bincount(gid, weights=np.where(ideal <= k, gain / np.log2(ideal + 1.0), 0.0), minlength=n_lists))
            for k in NDCG_CUTOFFS}


def rank_within_group(gid: np.ndarray, score: np.ndarray) -> np.ndarray:
    """1-based rank of each row in its list by score, descending. Ties: a fixed pseudo-random order, never the
    row order: a list's rows come in logged position order, so a scorer with ties (a two-leaf model, a
    constant) would inherit the logging policy's ranking and the clicks its top positions got."""
    tiebreak = np.random.default_rng(0).permutation(np.asarray(gid).size)
    return _rank_within_group(gid, -np.asarray(score, dtype=np.float64), tiebreak)


def auc(*, binary: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum formula with tied scores sharing their average rank."""
    from scipy.stats import rankdata

    pos = np.asarray(binary) > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(*, columns: Mapping[str, np.ndarray], score: np.ndarray, segments: Sequence[str],
             label: str = "label", binary_label: str = "label_binary", group: str = "request_id") -> ScorerMetrics:
    """One scorer's metrics on the holdout, overall and per segment ("tenant_id=acme": metrics, ...)."""
    lab, bin_, grp = (np.asarray(columns[c]) for c in (label, binary_label, group))
    score = np.asarray(score)
    segmented: dict[str, dict[str, Any]] = {}
    for column in segments:
        values = np.asarray(columns[column]).astype(str)
        for value in sorted(set(values.tolist())):
            rows = values == value
            segmented[f"{column}={value}"] = ranking_metrics(
                label=lab[rows], binary=bin_[rows], score=score[rows], group=grp[rows])
    return ScorerMetrics(overall=ranking_metrics(label=lab, binary=bin_, score=score, group=grp), segments=segmented)


def calibration(*, score: np.ndarray, binary: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Score quantile bins with their mean score and positive rate, and an equal-width score histogram
    split by the binary label (the report's calibration and distribution plots)."""
    score = np.asarray(score, dtype=np.float64)
    binary = np.asarray(binary, dtype=np.float64)
    hist_edges = np.histogram_bin_edges(score, bins=2 * bins)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(which, minlength=max(len(edges) - 1, 1))
    keep = count > 0
    return {
        "edges": edges.tolist(),
        "count": count[keep].astype(int).tolist(),
        "mean_score": (np.bincount(which, weights=score)[keep] / count[keep]).tolist(),
        "positive_rate": (np.bincount(which, weights=binary)[keep] / count[keep]).tolist(),
        "hist_edges": hist_edges.tolist(),
        "hist_positive": np.histogram(score[binary > 0], bins=hist_edges)[0].astype(int).tolist(),
        "hist_negative": np.histogram(score[binary <= 0], bins=hist_edges)[0].astype(int).tolist(),
    }


def _rank_within_group(gid: np.ndarray, key: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each row inside its group when sorted by key ascending (ties: by `tiebreak`, else row
    order)."""
    order = np.lexsort((np.arange(gid.size) if tiebreak is None else tiebreak, key, gid))
    starts = np.r_[0, np.flatnonzero(np.diff(gid[order])) + 1]
    pos = np.arange(gid.size) - np.repeat(starts, np.diff(np.r_[starts, gid.size]))
    rank = np.empty(gid.size, dtype=np.float64)
    rank[order] = pos + 1
    return rank


def _cumsum_within(g_sorted: np.ndarray, values: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
    offset = np.repeat(np.r_[0.0, total[starts[1:] - 1]], np.diff(np.r_[starts, g_sorted.size]))
    return total - offset


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None
