"""Recall@k and the popularity baseline against hand-computed values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from feedloop.retrieval import evaluate
from feedloop.retrieval.items import Catalog


def test_recall_is_the_mean_over_users_of_the_share_of_their_relevant_items_in_the_top_k():
    lists = {"u1": ["a", "b", "c", "d"], "u2": ["x", "y"]}
    relevant = {"u1": {"b", "d"}, "u2": {"z"}, "u3": {"a"}, "u4": set()}
    # k=1: u1 0/2, u2 0, u3 (no list) 0 -> 0; k=2: u1 1/2 -> 1/6; k=4: u1 2/2 -> 1/3; u4 has nothing to find
    assert evaluate.recall_at(lists, relevant, (1, 2, 4)) == pytest.approx({1: 0.0, 2: 1 / 6, 4: 1 / 3})


def test_score_splits_by_tenant_and_counts_cold_items_apart():
    lists = {"u1": ["a", "b"], "u2": ["c"]}
    relevant = {"u1": {"a", "new"}, "u2": {"c"}}
    result = evaluate.score("m", lists, relevant, {"u1": "acme", "u2": "globex"}, (2,), cold_items={"new", "c"})
    assert result.at == pytest.approx({2: 0.75})
    assert result.by_tenant == {"acme": {2: 0.5}, "globex": {2: 1.0}}  # exact in binary
    assert (result.cold_at, result.cold_users) == (pytest.approx({2: 0.5}), 2)  # u1 misses "new", u2 finds "c"


def test_popularity_ranks_the_tenants_catalog_by_training_positives_ties_by_id():
    catalog = Catalog(np.array(["a", "b", "c", "d"], dtype=object), np.array(["t", "t", "t", "s"], dtype=object),
                      np.array([""] * 4, dtype=object), np.array([""] * 4, dtype=object), np.zeros(4),
                      np.zeros((4, 0), np.float32))
    positives = pa.table({"item_id": ["c", "c", "d", "d", "d", "b"]})
    lists = evaluate.popularity(positives, catalog, {"u": "t", "v": "s"}, 3)
    assert lists == {"u": ["c", "b", "a"], "v": ["d"]}
