"""Ranking metrics on hand-built lists, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedloop.training.evaluate import auc, calibration, evaluate, ranking_metrics

# Group a: ranked by score 3, 2, 1 -> labels 0, 2, 1 (binary 0, 1, 1). Group b: no relevant row.
A = dict(label=[0, 2, 1], binary=[0, 1, 1], score=[3.0, 2.0, 1.0], group=["a", "a", "a"])
B = dict(label=[0, 0], binary=[0, 0], score=[1.0, 1.0], group=["b", "b"])


def _cat(*parts):
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def test_one_list_by_hand():
    m = ranking_metrics(**{k: np.asarray(v) for k, v in A.items()})
    dcg = 3 / math.log2(3) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@1"] == 0.0
    assert m["ndcg@5"] == pytest.approx(dcg / idcg) and m["ndcg@10"] == pytest.approx(0.659001, abs=1e-6)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["mrr"] == 0.5
    assert m["auc"] == 0.0
    assert (m["rows"], m["lists"], m["groups"]) == (3, 1, 1)


def test_lists_without_a_relevant_row_count_as_lists_not_groups_and_ties_share_auc_ranks():
    m = ranking_metrics(**_cat(A, B))
    assert (m["rows"], m["lists"], m["groups"]) == (5, 2, 1)
    assert m["ndcg@10"] == pytest.approx(0.659001, abs=1e-6)  # group b is not judged
    assert m["auc"] == 0.5  # positives 2, 1 vs negatives 3, 1, 1: 2 wins + 2 ties of 6 pairs


def test_tied_scores_keep_row_order():
    m = ranking_metrics(label=np.array([0, 3]), binary=np.array([0, 1]), score=np.array([1.0, 1.0]),
                        group=np.array(["g", "g"]))
    assert m["mrr"] == 0.5 and m["ndcg@1"] == 0.0


def test_perfect_ranking_scores_one():
    m = ranking_metrics(label=np.array([3, 2, 0, 1]), binary=np.array([1, 1, 0, 1]), score=np.array([9, 8, 1, 2.0]),
                        group=np.array(["g"] * 4))
    assert all(m[k] == pytest.approx(1.0) for k in ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr", "auc"))


def test_auc_is_none_with_one_class():
    assert auc(binary=np.array([1, 1]), score=np.array([0.2, 0.3])) is None


def test_segments_are_named_column_equals_value_with_their_support():
    rows = _cat(A, B)
    result = evaluate(columns={"label": rows["label"], "label_binary": rows["binary"], "request_id": rows["group"],
                               "tenant_id": np.array(["acme"] * 3 + ["globex"] * 2)},
                      score=rows["score"], segments=["tenant_id"])
    assert sorted(result.segments) == ["tenant_id=acme", "tenant_id=globex"]
    assert result.segments["tenant_id=acme"]["groups"] == 1
    assert result.segments["tenant_id=globex"]["groups"] == 0
    assert result.segments["tenant_id=globex"]["ndcg@10"] is None


def test_calibration_bins_cover_every_row():
    score = np.linspace(0, 1, 100)
    cal = calibration(score=score, binary=(score > 0.5).astype(int), bins=4)
    assert sum(cal["count"]) == 100 and cal["positive_rate"][0] == 0.0 and cal["positive_rate"][-1] == 1.0
