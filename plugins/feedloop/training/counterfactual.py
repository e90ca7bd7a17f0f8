"""Counterfactual evaluation: ranking metrics the logging policy cannot bias, with bootstrap intervals.

Why: the holdout's lists were ranked by the live model (the champion). Users examine the top, so
the items it put on top are the ones that got clicked, and on its own logs the champion looks far
better than it is (demo day 5: champion NDCG@10 0.687 vs candidate 0.533 on the same rows, while by
the simulator's hidden ground truth the candidate was better). Two estimates that do not favour
the logger, for every scorer on the same lists:

- `explore` (estimator "exploration"): plain metrics on exploration lists only (`explore == true`: the
  pods showed a random subset of the candidates in random order, and the dataset keeps these lists out
  of training); unbiased but few lists. The gate compares on it when at least `min_support` lists are
  judged (`choose_estimate`).
- `debiased` (estimator "snips-ipw"): on all lists, each row's gain 2^label - 1 times the dataset's
  `weight` (1 / examination propensity of its logged position, clipped, for clicked rows; 1
  otherwise), so a click far down counts for the clicks its position hid. NDCG@k = the sum over
  lists of DCG@k of the weighted gains over the sum over lists of their ideal DCG@k: self-normalised
  over lists. Why not per list: a list with one click (most judged lists) has its weight in both
  DCG and ideal DCG, so the weight cancels and the per-list ratio is the biased metric again
  (tests/unit/counterfactual shows it preferring the logger). Pooled, the normaliser is the same
  for every scorer, and the numerator is the inverse-propensity DCG, unbiased for the DCG of true
  relevance when the propensities are right: differences between scorers are what the gate needs.
  But only in position: the champion also chose WHICH candidates these lists show, and reranking its
  choice cannot see what a challenger gains by picking others (against the simulator's truth on whole
  candidate pools, this estimate came out at about half the true difference and sometimes with the
  wrong sign). So it is the gate's fallback when exploration lists are too few.

Why plain metrics on exploration lists, not inverse-propensity weighted ones: there, position is
random and independent of every model, so an item's expected gain is its relevance times the same mean
examination; weighting by 1 / examination keeps that unbiased but lets a few deep clicks decide. In
a 21-day loop the weighted paired difference on the same 756 lists was -0.016 and the plain one +0.011,
with the truth on those lists +0.005 (bench/loop.py, seed 10, 2026-11-27).

Intervals: percentile bootstrap over requests (lists), seeded. Every figure is a ratio of sums over
lists (a plain mean has denominator 1 per list that counts), computed for every column on the SAME
resamples, so a difference's interval is paired. One resample of the judged lists per replicate is
shared by all segments; a segment's value in it is the ratio over its lists that were drawn (a
replicate that draws none of them is left out for that segment).
Why not scipy.stats.bootstrap: its generic path gathers a resampled copy of every column (measured
here: 4.4 s for ONE column of 200k lists, 1000 percentile resamples, vectorised, batch 25); here a
replicate is the resample's counts (one bincount) times the data (one matrix product per cell of
lists): 3.7 s for 200k judged lists x 32 columns x 8 scopes (tests compare its interval with scipy's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from feedloop.contract.decisions import CounterfactualEstimates
from feedloop.training.evaluate import NDCG_CUTOFFS, dcg_per_list, per_list, rank_within_group

ESTIMATOR = "snips-ipw"
ESTIMATORS = {"explore": "exploration", "debiased": ESTIMATOR}  # estimate block -> estimator name
COMPARE_ON = ("exploration", "all")  # promotion.compare_on
DEBIASED_METRICS = tuple(f"ndcg@{k}" for k in NDCG_CUTOFFS)
EXPLORE_METRICS = (*DEBIASED_METRICS, "map", "mrr")
ESTIMATES = {
    "explore": "plain metrics on exploration lists only (explore == true: random candidates in random order, "
               "never trained on; with promotion.unused_half only the half the champion was not promoted on); "
               "mean over lists with a relevant row",
    "debiased": f"{ESTIMATOR}: gains x inverse examination propensity of the logged position; NDCG@k = sum over "
                "lists of DCG@k / sum over lists of ideal DCG@k (self-normalised over lists, not per list)",
}
_BATCH_CELLS = 8_000_000  # lists x replicates per batch: bounds the memory of the resample draw (~150 MB)


def choose_estimate(columns: Mapping[str, np.ndarray], *, compare_on: str, min_support: int, half: int | None = None,
                    days: int = 0, label: str = "label", explore: str = "explore",
                    group: str = "request_id") -> tuple[str, str]:
    """(estimate block the gate compares on, why): "explore" when `compare_on` is "exploration" and at least
    `min_support` exploration lists have a relevant row, else "debiased" (all lists). Why the fallback: on
    little traffic (a new deployment) a gate that needs exploration lists would call every candidate
    inconclusive and the loop would never learn; on all lists it still sees the position-debiased
    difference, and the reason names the champion's selection bias. `half`: the lists `explore` marks are
    that half only (`unused_half`), `days` > 0: those of the holdout's last `days` days (`compare_days`), and the
    reason says so."""
    if compare_on not in COMPARE_ON:
        raise ValueError(f"compare_on must be one of {', '.join(COMPARE_ON)}, got {compare_on!r}")
    if compare_on == "all":
        return "debiased", f"{ESTIMATOR} on all lists (promotion.compare_on = all)"
    relevant = np.asarray(columns[explore]).astype(bool) & (np.asarray(columns[label]) > 0)
    judged = len(np.unique(np.asarray(columns[group])[relevant]))
    which = "exploration lists" if half is None else f"half {half} of the exploration lists (the champion's unused one)"
    if days:
        which += f" of the last {days} day{'s' if days > 1 else ''}"
    if judged >= min_support:
        return "explore", f"{which}, plain metrics ({judged} judged)"
    return "debiased", (f"{ESTIMATOR} on all lists: only {judged} judged {which}, fewer than "
                        f"promotion.min_support {min_support} (the champion chose what the others show: biased "
                        "towards its picks)")


def list_half(request_ids: np.ndarray) -> np.ndarray:
    """0 or 1 per row, from a stable hash of its request id: the same list is in the same half on every day and
    in every process, so a champion's half can be told apart from lists it was never chosen on."""
    ids = np.asarray(request_ids).astype(str).astype(object)
    return (pd.util.hash_array(ids, categorize=False) & 1).astype(np.int8)


def unused_half(champion_paired: Mapping[str, Any] | None) -> int:
    """The half of the exploration lists a candidate is compared on: the one the champion's own promotion was not
    judged on. Why: a champion promoted on a lucky estimate keeps that luck on the lists it was chosen on, and a
    day's window shares 13 of its 14 days with the next one; on the other half its estimate is fresh. A champion
    never gated on a half (the first model, or judged on all lists) leaves half 0."""
    paired = champion_paired or {}
    if paired.get("gated") == "explore" and paired.get("half") in (0, 1):
        return 1 - int(paired["half"])
    return 0


def gated_estimate(paired: Mapping[str, Any] | None) -> str:
    """The estimate block an evaluation's paired differences were gated on; "debiased" for evaluations from
    before choose_estimate existed."""
    return (paired or {}).get("gated", "debiased")


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap over lists; the seed makes a re-run give identical numbers."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 7

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unit": "request (list)", "method": "percentile"}


@dataclass(frozen=True)
class Ratio:
    """Per-list numerator and denominator of a figure that is sum(numerator) / sum(denominator) over lists;
    a list with denominator 0 does not count."""

    num: np.ndarray
    den: np.ndarray

    @classmethod
    def mean(cls, per_list_values: np.ndarray) -> Ratio:
        """A plain mean over the lists whose value is not NaN."""
        present = ~np.isnan(per_list_values)
        return cls(np.where(present, per_list_values, 0.0), present.astype(np.float64))


def evaluate(*, columns: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray], segments: Sequence[str],
             bootstrap: Bootstrap, paired: tuple[str, str] | None = None, label: str = "label",
             weight: str = "weight", explore: str = "explore", group: str = "request_id") -> CounterfactualEstimates:
    """Both estimates for every scorer, overall and per segment, and `paired[0]` minus `paired[1]`.

    scorers: {name: {"explore": block, "debiased": block}}; paired: {"of", "explore": block, "debiased": block}
    or None; block = {"overall": scope, "segments": {"tenant_id=acme": scope}};
    scope = {"lists": n, metric: {"value", "low", "high"}} (None where no list counts).
    A list's segment is the value of its first row (a request is one tenant on one surface).
    """
    label_ = np.asarray(columns[label], dtype=np.float64)
    gain = np.exp2(label_) - 1.0
    weighted = gain * np.asarray(columns[weight], dtype=np.float64)
    shuffled = np.asarray(columns[explore]).astype(bool)
    _, first_row, gid = np.unique(np.asarray(columns[group]), return_index=True, return_inverse=True)
    n_lists = len(first_row)
    judged = np.bincount(gid, weights=gain, minlength=n_lists) > 0  # the population every figure averages over

    figures: dict[tuple[str, str, str], Ratio] = {}
    for scorer, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        rank = rank_within_group(gid, score)
        for k, (dcg, idcg) in dcg_per_list(gain=weighted, rank=rank, gid=gid, n_lists=n_lists).items():
            figures[scorer, "debiased", f"ndcg@{k}"] = Ratio(dcg, idcg)
        plain = per_list(gain=gain[shuffled], binary=label_[shuffled] >= 1, score=score[shuffled],
                         gid=gid[shuffled], n_lists=n_lists)
        for metric in EXPLORE_METRICS:
            figures[scorer, "explore", metric] = Ratio.mean(plain[metric])
    if paired is not None:
        a, b = paired
        for (scorer, estimate, metric), ratio in list(figures.items()):
            if scorer == a:  # same lists, same denominator: (sum a - sum b) / sum denominator
                figures["paired", estimate, metric] = Ratio(ratio.num - figures[b, estimate, metric].num, ratio.den)

    names = list(figures)
    scopes = {"overall": np.ones(int(judged.sum()), dtype=bool)}
    for column in segments:
        list_value = np.asarray(columns[column]).astype(str)[first_row][judged]
        for value in sorted(set(list_value.tolist())):
            scopes[f"{column}={value}"] = list_value == value
    stats = bootstrap_ratios(numerators=_stack([figures[n].num[judged] for n in names], judged),
                             denominators=_stack([figures[n].den[judged] for n in names], judged),
                             scopes=scopes, bootstrap=bootstrap)

    def block(owner: str, estimate: str, metrics: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"overall": None, "segments": {}}
        cols = [names.index((owner, estimate, m)) for m in metrics]
        for scope, (value, low, high, support) in stats.items():
            entry: dict[str, Any] = {"lists": int(support[cols[0]])}
            for m, j in zip(metrics, cols):
                entry[m] = {"value": _num(value[j]), "low": _num(low[j]), "high": _num(high[j])}
            if scope == "overall":
                out["overall"] = entry
            else:
                out["segments"][scope] = entry
        return out

    return CounterfactualEstimates(
        scorers={s: {"explore": block(s, "explore", EXPLORE_METRICS),
                     "debiased": block(s, "debiased", DEBIASED_METRICS)} for s in scores},
        paired=None if paired is None else {"of": list(paired), "explore": block("paired", "explore", EXPLORE_METRICS),
                                            "debiased": block("paired", "debiased", DEBIASED_METRICS)})


def bootstrap_ratios(*, numerators: np.ndarray, denominators: np.ndarray, scopes: Mapping[str, np.ndarray],
                     bootstrap: Bootstrap) -> dict[str, tuple[np.ndarray, ...]]:
    """Per scope: (value, low, high, support) of every column, value = sum(numerator) / sum(denominator)
    over the scope's lists (`scopes`: a boolean mask over lists each); support = lists with a denominator.

    One multinomial resample of all lists per replicate, shared by every scope and column. Lists with
    the same scopes form a cell, so a replicate's sums are one small matrix product per cell of the
    resample counts, never a gathered copy of the data.
    """
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    n, m = num.shape
    masks = [np.asarray(mask, dtype=bool) for mask in scopes.values()]
    cells = (np.unique(np.packbits(np.column_stack(masks), axis=1), axis=0, return_inverse=True)[1].ravel()
             if n else np.zeros(0, dtype=np.int64))
    order = np.argsort(cells, kind="stable")
    dens, den_of = _distinct_columns(den)  # many columns share a denominator: sum each once
    data = np.concatenate([num, dens], axis=1)[order]
    cells = cells[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if n else np.zeros(0, dtype=np.int64)
    bounds = list(zip(starts.tolist(), np.r_[starts[1:], n].astype(int).tolist()))
    in_scope = {name: mask[order][starts] for name, mask in zip(scopes, masks)}  # scope -> its cells
    cell_sums = np.array([data[s:e].sum(axis=0) for s, e in bounds]).reshape(len(bounds), -1)
    cell_support = np.array([(data[s:e, m:] > 0).sum(axis=0) for s, e in bounds]).reshape(len(bounds), -1)
    replicates = _replicates(data.astype(np.float32), bounds=bounds, in_scope=in_scope, bootstrap=bootstrap)

    alpha = (1 - bootstrap.confidence) / 2
    out = {}
    for name, cells_in in in_scope.items():
        total = cell_sums[cells_in].sum(axis=0)
        value = _ratio(total[:m], total[m:][den_of])
        reps = _ratio(replicates[name][:, :m], replicates[name][:, m:][:, den_of])
        low, high = _quantiles(reps, alpha)
        support = cell_support[cells_in].sum(axis=0)[den_of]
        out[name] = (value, np.where(support > 0, low, np.nan), np.where(support > 0, high, np.nan), support)
    return out


def _replicates(data32: np.ndarray, *, bounds: list[tuple[int, int]], in_scope: Mapping[str, np.ndarray],
                bootstrap: Bootstrap) -> dict[str, np.ndarray]:
    """Per scope, the column sums of every replicate (replicates x columns), batch by batch.

    BLAS is held to one thread: these are many small matrix products, and with two threads on the two
    cores other tasks were using (load 4.7) 200k lists took 20 s instead of 5 s (measured 2026-12).
    """
    from threadpoolctl import threadpool_limits

    n = data32.shape[0]
    out: dict[str, list[np.ndarray]] = {name: [] for name in in_scope}
    rng = np.random.default_rng(bootstrap.seed)
    per_batch = max(1, min(bootstrap.resamples, _BATCH_CELLS // max(n, 1)))
    with threadpool_limits(limits=1, user_api="blas"):
        for done in range(0, bootstrap.resamples if n else 0, per_batch):
            b = min(per_batch, bootstrap.resamples - done)
            draw = rng.integers(0, n, (b, n), dtype=np.uint32).astype(np.int64)
            draw += np.arange(b, dtype=np.int64)[:, None] * n
            counts = np.bincount(draw.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)
            sums = np.stack([counts[:, s:e] @ data32[s:e] for s, e in bounds], axis=1)  # b x cells x columns
            for name, cells_in in in_scope.items():
                out[name].append(sums[:, cells_in, :].sum(axis=1, dtype=np.float64))
    return {name: np.concatenate(parts) if parts else np.full((1, data32.shape[1]), np.nan)
            for name, parts in out.items()}


def _distinct_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns and, per column, the index of its copy among them."""
    first: dict[bytes, int] = {}
    index = np.array([first.setdefault(np.ascontiguousarray(col).tobytes(), len(first)) for col in matrix.T],
                     dtype=np.int64)
    keep = [list(index).index(i) for i in range(len(first))]
    return matrix[:, keep], index


def _stack(columns: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    return np.column_stack(columns) if columns else np.empty((int(rows.sum()), 0))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)


def _quantiles(reps: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column over the replicates that drew the column's lists (others are NaN)."""
    low, high = np.full(reps.shape[1], np.nan), np.full(reps.shape[1], np.nan)
    seen = ~np.isnan(reps).all(axis=0)
    if seen.any():
        low[seen], high[seen] = np.nanquantile(reps[:, seen], [alpha, 1 - alpha], axis=0)
    return low, high


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
