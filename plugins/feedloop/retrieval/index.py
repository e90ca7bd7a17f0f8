"""The item vectors in an approximate-nearest-neighbour index, one per tenant, stored with the version.

Why one index per tenant: retrieval never crosses tenants, so filtering by tenant is choosing the index, and
no search returns another tenant's item to be thrown away afterwards (a filtered search in a shared index
returns fewer than k when the tenant is small). Why faiss HNSW with inner product: the towers' vectors are
unit length, so inner product is cosine; HNSW answers in well under a millisecond per query at these sizes
and faiss-cpu is one wheel with no other dependency (README, "Retrieval"). Built with one thread: a
multi-threaded HNSW build links the graph in a different order each time, and the index is part of the version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

IDS_FILE = "index/items.json"


@dataclass
class TenantIndex:
    """Per tenant: a faiss HNSW index over its items' vectors and the item id of every row."""

    indexes: dict[str, object]
    item_ids: dict[str, list[str]]
    ef_search: int

    @classmethod
    def build(cls, vectors: np.ndarray, item_ids, tenant_ids, *, m: int, ef_construction: int,
              ef_search: int) -> TenantIndex:
        import faiss  # lazy: faiss loads only where an index is built or searched

        faiss.omp_set_num_threads(1)
        item_ids, tenant_ids = np.asarray(item_ids, dtype=object), np.asarray(tenant_ids, dtype=object)
        indexes, ids = {}, {}
        for tenant in sorted(set(tenant_ids.tolist())):
            rows = np.flatnonzero(tenant_ids == tenant)
            index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.add(np.ascontiguousarray(vectors[rows], dtype=np.float32))
            indexes[tenant], ids[tenant] = index, item_ids[rows].tolist()
        return cls(indexes, ids, ef_search)

    def search(self, tenant: str, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The top k items of `tenant` by inner product for each query row (fewer when the tenant has fewer
        items), best first, and their scores. An unknown tenant has no items: empty lists."""
        import faiss  # lazy: faiss loads only where an index is built or searched

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        index = self.indexes.get(tenant)
        if index is None:
            return [[] for _ in range(len(queries))], np.zeros((len(queries), 0), np.float32)
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        scores, rows = index.search(queries, min(k, index.ntotal), params=params)
        ids = self.item_ids[tenant]
        return [[ids[r] for r in row if r >= 0] for row in rows], scores

    def vectors(self, tenant: str) -> np.ndarray:
        """The tenant's item vectors in row order (an HNSW-Flat index keeps them exactly); [0, 0] if unknown."""
        index = self.indexes.get(tenant)
        return np.zeros((0, 0), np.float32) if index is None else index.reconstruct_n(0, index.ntotal)

    def to_files(self) -> dict[str, bytes]:
        """index/<tenant>.faiss per tenant and index/items.json (tenant -> item id of every row, ef_search)."""
        import faiss  # lazy: faiss loads only where an index is built or searched

        files = {f"index/{tenant}.faiss": faiss.serialize_index(index).tobytes()
                 for tenant, index in self.indexes.items()}
        files[IDS_FILE] = orjson.dumps({"ef_search": self.ef_search, "items": self.item_ids},
                                       option=orjson.OPT_SORT_KEYS)
        return files

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> TenantIndex:
        import faiss  # lazy: faiss loads only where an index is built or searched

        doc = orjson.loads(files[IDS_FILE])
        indexes = {tenant: faiss.deserialize_index(np.frombuffer(files[f"index/{tenant}.faiss"], dtype=np.uint8))
                   for tenant in doc["items"]}
        return cls(indexes, {t: list(ids) for t, ids in doc["items"].items()}, int(doc["ef_search"]))
