"""A version's files rebuild the query side: ONNX query vectors and the index give what training gave."""

from __future__ import annotations

import numpy as np
import pytest

from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.package import QueryEncoder, version_files
from feedloop.retrieval.train import train
from tests.unit.retrieval import tiny


@pytest.mark.parametrize("content_dim", [pytest.param(0, id="no-content"), pytest.param(3, id="with-content")])
def test_the_query_encoder_from_the_files_reproduces_the_trained_query_tower(content_dim):
    catalog = tiny.catalog(content_dim)
    model = train(tiny.positives(), catalog, tiny.CONFIG.model_copy(update={"min_user_positives": 1}))
    index = TenantIndex.build(model.item_vectors(catalog.item_ids), catalog.item_ids, catalog.tenant_ids, m=8,
                              ef_construction=40, ef_search=16)
    files = version_files(model, index)

    users = ["u0", "u6", "new-user"]
    encoder = QueryEncoder(files, model.shape)
    assert np.max(np.abs(encoder.vectors(users) - model.query_vectors(users))) < 1e-5
    served = TenantIndex.from_files(files).search("acme", encoder.vectors(["u0"]), 3)[0]
    assert served == index.search("acme", model.query_vectors(["u0"]), 3)[0]
