"""counterfactual: debiased and exploration-only metrics by hand, the bootstrap, and a logged day where
the naive metric picks the logger's own ranking while the debiased estimate and the gate pick the better one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedloop.training import counterfactual as cf
from feedloop.training.evaluate import evaluate as raw_evaluate
from feedloop.training.evaluate import per_list
from feedloop.promotion.gate import Thresholds, decide

L3 = math.log2(3)
QUICK = cf.Bootstrap(resamples=200, seed=1)

# List a: scores 3, 2, 1 -> labels 0, 1, 2, weights 1, 2, 1 (weighted gains 0, 2, 3); an exploration list.
# List b: scores 1, 2 -> labels 1, 0, weights 4, 1 (weighted gains 4, 0). List c: no click: never counts.
HAND = {"request_id": np.array(["a", "a", "a", "b", "b", "c", "c"]),
        "label": np.array([0, 1, 2, 1, 0, 0, 0]), "weight": np.array([1.0, 2.0, 1.0, 4.0, 1.0, 1.0, 1.0]),
        "explore": np.array([True, True, True, False, False, False, False]),
        "surface": np.array(["feed"] * 3 + ["search"] * 4)}
HAND_SCORE = np.array([3.0, 2.0, 1.0, 1.0, 2.0, 0.5, 0.4])


def _value(block, metric):
    return block[metric]["value"]


def test_debiased_ndcg_pools_weighted_dcg_over_lists_by_hand():
    out = cf.evaluate(columns=HAND, scores={"m": HAND_SCORE}, segments=("surface",), bootstrap=QUICK)
    debiased = out.scorers["m"]["debiased"]
    dcg_a, idcg_a = 2 / L3 + 3 / 2, 3 + 2 / L3
    dcg_b, idcg_b = 4 / L3, 4.0
    assert debiased["overall"]["lists"] == 2
    assert _value(debiased["overall"], "ndcg@10") == pytest.approx((dcg_a + dcg_b) / (idcg_a + idcg_b))
    assert _value(debiased["overall"], "ndcg@5") == pytest.approx((dcg_a + dcg_b) / (idcg_a + idcg_b))
    assert _value(debiased["overall"], "ndcg@1") == 0.0  # both lists put an unclicked row first
    assert _value(debiased["segments"]["surface=search"], "ndcg@10") == pytest.approx(dcg_b / idcg_b)
    assert debiased["segments"]["surface=search"]["lists"] == 1


def test_the_gate_compares_on_exploration_lists_when_enough_are_judged_else_on_all_lists_and_says_why():
    assert cf.choose_estimate(HAND, compare_on="exploration", min_support=1) == (
        "explore", "exploration lists, plain metrics (1 judged)")  # list a; c has no click, b is not exploration
    block, why = cf.choose_estimate(HAND, compare_on="exploration", min_support=2)
    assert block == "debiased" and "only 1 judged exploration lists, fewer than promotion.min_support 2" in why
    assert cf.choose_estimate(HAND, compare_on="all", min_support=1)[0] == "debiased"
    with pytest.raises(ValueError, match="compare_on must be one of exploration, all"):
        cf.choose_estimate(HAND, compare_on="shown", min_support=1)


def test_a_list_stays_in_its_half_in_every_process_and_the_halves_are_even():
    assert cf.list_half(np.array([f"r-{i}" for i in range(10)])).tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    assert cf.list_half(np.array([1, 2, 3])).tolist() == cf.list_half(np.array(["1", "2", "3"])).tolist()
    assert abs(cf.list_half(np.array([f"req-{i}" for i in range(100_000)])).mean() - 0.5) < 0.005


def test_a_candidate_is_compared_on_the_half_its_champion_was_not_promoted_on():
    assert cf.unused_half({"gated": "explore", "half": 0}) == 1
    assert cf.unused_half({"gated": "explore", "half": 1}) == 0
    # never gated on a half: the first model, a fallback to all lists, an evaluation from before halves
    assert cf.unused_half(None) == cf.unused_half({"gated": "debiased", "half": None}) == 0
    assert cf.unused_half({"gated": "explore"}) == 0
    block, why = cf.choose_estimate(HAND, compare_on="exploration", min_support=1, half=1)
    assert block == "explore"
    assert why == "half 1 of the exploration lists (the champion's unused one), plain metrics (1 judged)"


def test_exploration_metrics_use_the_shuffled_lists_only_and_unweighted_gains():
    out = cf.evaluate(columns=HAND, scores={"m": HAND_SCORE}, segments=("surface",), bootstrap=QUICK)
    explore = out.scorers["m"]["explore"]
    assert explore["overall"]["lists"] == 1
    assert _value(explore["overall"], "ndcg@10") == pytest.approx((1 / L3 + 3 / 2) / (3 + 1 / L3))
    assert _value(explore["overall"], "map") == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert _value(explore["overall"], "mrr") == 0.5
    assert explore["segments"]["surface=search"] == {"lists": 0, **{
        m: {"value": None, "low": None, "high": None} for m in cf.EXPLORE_METRICS}}


def test_a_rarely_examined_click_ranked_well_counts_for_more_than_a_top_click():
    """Two lists, one click each: at logged position 1 (weight 1) and at position 5 (weight 5). Per list the
    weight would cancel (both rankers score the same); pooled, ranking the rare click first wins."""
    cols = {"request_id": np.array(["p", "p", "q", "q"]), "label": np.array([1, 0, 1, 0]),
            "weight": np.array([1.0, 1.0, 5.0, 1.0]), "explore": np.zeros(4, dtype=bool)}
    top_click_first = np.array([2.0, 1.0, 1.0, 2.0])
    rare_click_first = np.array([1.0, 2.0, 2.0, 1.0])
    out = cf.evaluate(columns=cols, scores={"x": top_click_first, "y": rare_click_first}, segments=(),
                      bootstrap=QUICK, paired=("y", "x"))
    x, y = (_value(out.scorers[s]["debiased"]["overall"], "ndcg@10") for s in ("x", "y"))
    assert x == pytest.approx((1 + 5 / L3) / 6) and y == pytest.approx((1 / L3 + 5) / 6)
    assert _value(out.paired["debiased"]["overall"], "ndcg@10") == pytest.approx(y - x)


def _logged_day(*, seed: int = 3, lists: int = 2000, size: int = 10, explore_share: float = 0.2):
    """A day the logger ranked by a noisy score: click = examined(position, 1 / position) x relevant; the
    dataset's weight = 1 / examination propensity for clicked rows. `better` scores by true relevance."""
    rng = np.random.default_rng(seed)
    n = lists * size
    relevance = rng.beta(1, 3, n)
    logger = relevance + rng.normal(scale=0.35, size=n)
    gid = np.repeat(np.arange(lists), size)
    explore = np.repeat(rng.random(lists) < explore_share, size)
    order = np.lexsort((np.where(explore, rng.random(n), -logger), gid))
    position = np.empty(n, dtype=np.int64)
    position[order] = np.tile(np.arange(1, size + 1), lists)
    click = ((rng.random(n) < 1.0 / position) & (rng.random(n) < relevance)).astype(np.int64)
    columns = {"request_id": gid, "label": click, "label_binary": click, "explore": explore,
               "weight": np.where(click > 0, position.astype(np.float64), 1.0),
               "surface": np.repeat(np.where(np.arange(lists) % 2, "feed", "search"), size)}
    return columns, {"better": relevance, "logger": logger}


def test_the_naive_metric_picks_the_logger_while_the_debiased_estimate_and_the_gate_pick_the_better_ranker():
    columns, scores = _logged_day()
    naive = {s: raw_evaluate(columns=columns, score=v, segments=("surface",)) for s, v in scores.items()}
    assert naive["logger"].overall["ndcg@10"] > naive["better"].overall["ndcg@10"] + 0.03

    boot = cf.Bootstrap(resamples=500, seed=7)
    out = cf.evaluate(columns=columns, scores=scores, segments=("surface",), bootstrap=boot,
                      paired=("better", "logger"))
    for estimate in ("debiased", "explore"):
        better, logger = (_value(out.scorers[s][estimate]["overall"], "ndcg@10") for s in ("better", "logger"))
        assert better > logger + 0.04, estimate
    assert out.paired["debiased"]["overall"]["ndcg@10"]["low"] > 0

    decision = decide({"version": "better", "parity": {"max_abs_diff": 0.0, "rows": 10}, **naive["better"].to_dict(),
                       **out.scorers["better"]},
                      {"version": "logger", **naive["logger"].to_dict(), **out.scorers["logger"]},
                      Thresholds(floors={}), paired={**boot.to_dict(), **out.paired})
    assert decision.promotable and decision.comparison.verdict == "better"
    assert [c.scope for c in decision.checks if c.kind == "comparison"] == ["overall", "surface=feed", "surface=search"]


def test_a_per_list_self_normalised_ndcg_would_still_pick_the_logger():
    """Why the normaliser is pooled over lists: per list, a one-click list's weight cancels out."""
    columns, scores = _logged_day()
    gid = columns["request_id"]
    gain = (np.exp2(columns["label"]) - 1.0) * columns["weight"]
    per_list_mean = {s: np.nanmean(per_list(gain=gain, binary=None, score=v, gid=gid, n_lists=gid.max() + 1)["ndcg@10"])
                     for s, v in scores.items()}
    assert per_list_mean["logger"] > per_list_mean["better"]


def test_the_bootstrap_is_seeded_reproducible_and_its_intervals_cover_the_estimates():
    columns, scores = _logged_day(lists=400)
    run = lambda seed: cf.evaluate(columns=columns, scores=scores, segments=("surface",),  # noqa: E731
                                   bootstrap=cf.Bootstrap(resamples=300, seed=seed), paired=("better", "logger"))
    first, again, other = run(7), run(7), run(8)
    assert first == again
    scopes = [scope for blocks in [*first.scorers.values(), first.paired] for estimate in ("debiased", "explore")
              for scope in (blocks[estimate]["overall"], *blocks[estimate]["segments"].values())]
    figures = [v for scope in scopes for k, v in scope.items() if k != "lists"]
    assert figures and all(f["low"] <= f["value"] <= f["high"] for f in figures)
    a = first.paired["debiased"]["overall"]["ndcg@10"]
    b = other.paired["debiased"]["overall"]["ndcg@10"]
    assert a["value"] == b["value"] and (a["low"], a["high"]) != (b["low"], b["high"])


def test_the_interval_of_a_mean_of_two_lists_by_hand():
    """Values 0 and 1: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4. So the 95% interval
    is [0, 1] and the 40% interval (30th to 70th percentile) is [1/2, 1/2]."""
    num, den, scopes = np.array([[0.0], [1.0]]), np.ones((2, 1)), {"overall": np.ones(2, dtype=bool)}
    for confidence, expected in ((0.95, (0.0, 1.0)), (0.4, (0.5, 0.5))):
        (value, low, high, support), = cf.bootstrap_ratios(
            numerators=num, denominators=den, scopes=scopes,
            bootstrap=cf.Bootstrap(resamples=2000, confidence=confidence, seed=3)).values()
        assert (value[0], low[0], high[0], support[0]) == (0.5, *expected, 2)


def test_a_difference_that_is_the_same_on_every_list_has_a_point_interval_when_paired():
    rng = np.random.default_rng(0)
    champion = rng.random(300)
    candidate = champion + 0.01
    num = np.column_stack([candidate, champion, candidate - champion])
    (value, low, high, _), = cf.bootstrap_ratios(numerators=num, denominators=np.ones_like(num),
                                                 scopes={"overall": np.ones(300, dtype=bool)},
                                                 bootstrap=QUICK).values()
    assert low[2] == pytest.approx(0.01) and high[2] == pytest.approx(0.01)
    assert high[0] - low[0] > 0.05  # each scorer on its own is uncertain; the paired difference is not


def test_a_segment_interval_comes_from_its_own_lists_only():
    values = np.r_[np.full(100, 0.3), np.linspace(0, 1, 100)][:, None]
    scopes = {"overall": np.ones(200, dtype=bool), "flat": np.arange(200) < 100, "spread": np.arange(200) >= 100}
    stats = cf.bootstrap_ratios(numerators=values, denominators=np.ones_like(values), scopes=scopes,
                                bootstrap=QUICK)
    assert stats["flat"][1][0] == pytest.approx(0.3) and stats["flat"][2][0] == pytest.approx(0.3)
    assert stats["spread"][2][0] - stats["spread"][1][0] > 0.05 and stats["flat"][3][0] == 100


def test_the_interval_of_a_mean_matches_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    sample = np.random.default_rng(5).exponential(size=300)
    (_, low, high, _), = cf.bootstrap_ratios(numerators=sample[:, None], denominators=np.ones((300, 1)),
                                             scopes={"overall": np.ones(300, dtype=bool)},
                                             bootstrap=cf.Bootstrap(resamples=5000, seed=1)).values()
    ref = bootstrap((sample,), np.mean, method="percentile", n_resamples=5000, rng=np.random.default_rng(2))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(low[0] - ref.confidence_interval.low) < 0.05 * width
    assert abs(high[0] - ref.confidence_interval.high) < 0.05 * width
