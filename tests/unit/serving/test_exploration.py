"""What a pod shows: its model's top items, or on an exploration request a random subset of ALL the candidates
in random order, so the gate can compare models on lists no model chose (feedloop.training.counterfactual)."""

from __future__ import annotations

import numpy as np

from feedloop.serving.ranking import shown_order

SCORES = np.arange(36, dtype=np.float64)[::-1].copy()  # candidate i scores 35 - i: the top 12 are 0..11


def test_a_ranked_request_shows_the_top_items_best_first():
    assert shown_order(SCORES, 12, explore=False, request_id="r").tolist() == list(range(12))


def test_an_exploration_request_shows_a_random_subset_of_all_candidates_the_same_on_a_retry():
    lists = [shown_order(SCORES, 12, explore=True, request_id=f"r{i}") for i in range(300)]
    assert all(len(set(o.tolist())) == 12 and o.min() >= 0 and o.max() < 36 for o in lists)
    assert (shown_order(SCORES, 12, explore=True, request_id="r7") == lists[7]).all()
    shown = np.bincount(np.concatenate(lists), minlength=36) / len(lists)
    assert np.abs(shown - 12 / 36).max() < 0.12          # every candidate about a third of the time, top or not
    first = np.bincount([o[0] for o in lists], minlength=36)
    assert (first[12:] > 0).sum() > 12                   # candidates outside the model's top 12 get position 1


def test_an_exploration_request_with_fewer_candidates_than_the_limit_shows_them_all():
    assert sorted(shown_order(SCORES[:5], 12, explore=True, request_id="r").tolist()) == [0, 1, 2, 3, 4]
