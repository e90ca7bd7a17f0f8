"""Tied scores never inherit the logged order: a list's rows come in position order, and breaking ties by row
order would hand a scorer with ties (a two-leaf model, a constant) the logging policy's ranking."""

from __future__ import annotations

import numpy as np

from feedloop.training.evaluate import rank_within_group


def test_a_constant_scorer_does_not_rank_the_logged_top_first():
    gid = np.repeat(np.arange(500), 10)                     # 500 lists of 10 rows, in logged position order
    ranks = rank_within_group(gid, np.zeros(gid.size))
    first_row_rank = ranks[::10]                            # where each list's logged top row lands
    assert 0.05 < np.mean(first_row_rank == 1) < 0.15      # about 1 in 10, not every time
    assert (rank_within_group(gid, np.zeros(gid.size)) == ranks).all()  # and the same order every call


def test_distinct_scores_rank_as_they_always_did():
    gid = np.array([0, 0, 0, 1, 1])
    assert rank_within_group(gid, np.array([0.1, 0.9, 0.5, 2.0, 3.0])).tolist() == [3, 1, 2, 2, 1]
