"""Both towers in ONNX score what the JAX forward scores."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from feedloop.retrieval import export, inputs, towers
from tests.unit.retrieval import tiny


@pytest.mark.parametrize("content_dim", [pytest.param(0, id="no-content-embeddings"),
                                         pytest.param(5, id="with-content-embeddings")])
def test_onnx_towers_match_the_jax_forward(content_dim):
    catalog = tiny.catalog(content_dim)
    features = inputs.build(tiny.positives(), catalog)
    shape = towers.Shape.of(features.vocabs, content=content_dim, id_dim=4, hidden=8, out_dim=4)
    params = towers.init(shape, seed=5)
    queries = features.queries(["u0", "u7", "someone-new"])   # an unknown user: the out-of-vocabulary row
    items = features.items([*catalog.item_ids, "not-in-catalog"])

    result = export.parity(params, shape, queries, items, threshold=1e-5)

    assert result.passed, result
    assert result.rows == 3 + 13
    query_inputs = [i.name for i in onnx.load_from_string(export.query_model(params, shape)).graph.input]
    assert query_inputs == ["user", "feats"] + (["profile"] if content_dim else [])


def test_a_parity_above_the_threshold_fails():
    assert not export.Parity(max_abs_diff=2e-4, rows=10, threshold=1e-4).passed
    assert not export.Parity(max_abs_diff=float("nan"), rows=10, threshold=1e-4).passed


def test_vectors_are_unit_length():
    features = inputs.build(tiny.positives(), tiny.catalog())
    shape = towers.Shape.of(features.vocabs, content=0, id_dim=4, hidden=8, out_dim=4)
    vectors = towers.item_tower(towers.init(shape, seed=1), features.items(tiny.catalog().item_ids))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
