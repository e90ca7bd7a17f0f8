"""The in-batch sampled softmax: hand-computed values, the log-Q correction and the masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedloop.retrieval.train import in_batch_loss

EYE = np.eye(2, dtype=np.float32)


def loss(q, i, log_q=(0.0, 0.0), tenant=(0, 0), item=(0, 1), temperature=1.0) -> float:
    return float(in_batch_loss(np.asarray(q, np.float32), np.asarray(i, np.float32), np.asarray(log_q, np.float32),
                               np.asarray(tenant), np.asarray(item), temperature))


def test_two_orthogonal_pairs_score_log_one_plus_e_to_minus_one():
    # logits [[1, 0], [0, 1]]: each row's loss is -log(e / (e + 1)) = log(1 + 1/e)
    assert loss(EYE, EYE) == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)


def test_temperature_divides_the_logits():
    assert loss(EYE, EYE, temperature=0.5) == pytest.approx(math.log1p(math.exp(-2)), abs=1e-6)


def test_log_q_lowers_the_logits_of_the_popular_item_in_every_row():
    # item 0 has share 0.8, item 1 share 0.2: logits [[1 - ln .8, -ln .2], [-ln .8, 1 - ln .2]]
    lq = (math.log(0.8), math.log(0.2))
    rows = [[1 - lq[0], -lq[1]], [-lq[0], 1 - lq[1]]]
    expected = np.mean([math.log(sum(math.exp(v) for v in row)) - row[k] for k, row in enumerate(rows)])
    assert loss(EYE, EYE, log_q=lq) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("tenant,item", [
    pytest.param((0, 1), (0, 1), id="another-tenants-item-is-no-negative"),
    pytest.param((0, 0), (5, 5), id="the-same-item-in-another-pair-is-no-negative"),
])
def test_masked_pairs_leave_only_the_positive(tenant, item):
    assert loss(EYE, EYE[::-1], tenant=tenant, item=item) == pytest.approx(0.0, abs=1e-6)
