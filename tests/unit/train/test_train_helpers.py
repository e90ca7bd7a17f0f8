"""train.group_sizes and selection.ipw_ndcg (the early-stopping metric) on tiny hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from feedloop.training.selection import ipw_ndcg
from feedloop.training.train import group_sizes


@pytest.mark.parametrize(("chunks", "expected"), [
    pytest.param([["a", "a", "b", "b", "b", "c"]], [2, 3, 1], id="contiguous-runs"),
    pytest.param([["a", "a"], ["a", "b"], ["b"]], [3, 2], id="runs-across-chunks"),
    pytest.param([["a", "b", "a"]], [1, 1, 1], id="a-request-that-comes-back-is-a-new-group"),
    pytest.param([["x"]], [1], id="one-row"),
    pytest.param([[]], [], id="empty"),
    pytest.param([["a", None, None, "b", None]], [1, 2, 1, 1], id="nulls-are-one-id"),
    pytest.param([[None, "a", "a"]], [1, 2], id="a-null-first"),
])
def test_group_sizes(chunks, expected):
    got = group_sizes(pa.chunked_array(chunks, pa.string()))
    assert got.dtype == np.int32
    assert got.tolist() == expected


def test_ipw_ndcg_exact_value_by_hand():
    # group 0: gains (2^label - 1) * weight = [0, 1*2, 3*1.5] = [0, 2, 4.5]
    #   ideal order 4.5, 2, 0 -> 4.5 + 2/log2(3); predicted order rows 1, 2, 0 -> 2 + 4.5/log2(3)
    # group 1: all labels 0 -> no gain, adds nothing
    # group 2: gains [1, 7]; predicted order is the ideal one -> 7 + 1/log2(3) both ways
    # pooled: sum of DCGs over sum of ideal DCGs
    sizes = np.array([3, 2, 2])
    labels = np.array([0, 1, 2, 0, 0, 1, 3], dtype=float)
    weights = np.array([1.0, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0])
    preds = np.array([0.1, 0.3, 0.2, 0.5, 0.4, -1.0, 2.0])
    name, value, higher_is_better = ipw_ndcg(sizes, labels, weights)(preds, None)
    g2 = 7 + 1 / math.log2(3)
    expected = (2 + 4.5 / math.log2(3) + g2) / (4.5 + 2 / math.log2(3) + g2)
    assert (name, higher_is_better) == ("ipw_ndcg@10", True)
    assert value == pytest.approx(expected, abs=1e-12)


def test_ipw_ndcg_does_not_cancel_a_single_clicks_weight():
    # Two lists with one click each: a click at a rarely examined position (weight 5) that a ranker puts
    # first is worth more than a weight-1 click it puts first. Per list, both would score the same.
    sizes, labels, weights = np.array([2, 2]), np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0, 5.0])
    feval = ipw_ndcg(sizes, labels, weights)
    first_list_right = feval(np.array([2.0, 1.0, 2.0, 1.0]), None)[1]
    second_list_right = feval(np.array([1.0, 2.0, 1.0, 2.0]), None)[1]
    assert second_list_right > first_list_right
    assert first_list_right == pytest.approx((1 + 5 / math.log2(3)) / 6, abs=1e-12)


def test_ipw_ndcg_truncates_at_k():
    # One group of 3, k=2: the only gain (label 1, weight 4 -> 4) is ranked 3rd -> outside the top 2 -> 0;
    # ranked 2nd -> 4/log2(3) / 4.
    feval = ipw_ndcg(np.array([3]), np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 4.0]), k=2)
    assert feval(np.array([3.0, 2.0, 1.0]), None)[1] == 0.0
    assert feval(np.array([3.0, 1.0, 2.0]), None)[1] == pytest.approx(1 / math.log2(3), abs=1e-12)
    assert feval(np.array([3.0, 1.0, 2.0]), None)[0] == "ipw_ndcg@2"


def test_ipw_ndcg_weight_changes_which_order_is_ideal():
    # Two clicked rows: without weights both gains are 1 (any order of them is ideal); a weight of 5 on
    # the lower-ranked row makes putting it first the ideal order.
    labels = np.array([1.0, 1.0])
    preds = np.array([2.0, 1.0])
    unweighted = ipw_ndcg(np.array([2]), labels, np.array([1.0, 1.0]))(preds, None)[1]
    weighted = ipw_ndcg(np.array([2]), labels, np.array([1.0, 5.0]))(preds, None)[1]
    assert unweighted == 1.0
    assert weighted == pytest.approx((1 + 5 / math.log2(3)) / (5 + 1 / math.log2(3)), abs=1e-12)
