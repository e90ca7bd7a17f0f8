"""The per-tenant faiss index: search stays in the tenant, and the bytes round trip."""

from __future__ import annotations

import numpy as np

from feedloop.retrieval.index import TenantIndex


def _index() -> tuple[TenantIndex, np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(90, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{k}" for k in range(90)]
    tenants = ["acme" if k % 3 else "globex" for k in range(90)]
    return TenantIndex.build(vectors, ids, tenants, m=8, ef_construction=40, ef_search=16), vectors, ids, tenants


def test_a_search_returns_only_the_tenants_items_best_first():
    index, vectors, ids, tenants = _index()
    found, scores = index.search("globex", vectors[[0, 1]], 10)  # item-0 is globex's, item-1 acme's
    assert found[0][0] == "item-0"
    assert all(tenants[ids.index(i)] == "globex" for row in found for i in row)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_asking_for_more_than_the_tenant_has_returns_all_of_them():
    index, vectors, ids, tenants = _index()
    found, _ = index.search("globex", vectors[:1], 500)
    assert sorted(found[0]) == sorted(i for i, t in zip(ids, tenants) if t == "globex")


def test_an_unknown_tenant_gets_empty_lists():
    index, vectors, _, _ = _index()
    assert index.search("nobody", vectors[:2], 5)[0] == [[], []]


def test_the_files_round_trip_and_a_rebuild_writes_the_same_bytes():
    index, vectors, _, _ = _index()
    files = index.to_files()
    assert sorted(files) == ["index/acme.faiss", "index/globex.faiss", "index/items.json"]
    again = TenantIndex.from_files(files)
    assert again.search("acme", vectors[:5], 7)[0] == index.search("acme", vectors[:5], 7)[0]
    assert _index()[0].to_files() == files
