"""Registered retriever versions for the serving tests and bench/serve.py, without training one.

Why synthetic: what a pod does with a retriever (verify, load, encode a user, search the tenant's index) depends
on the files' shapes and sizes, not on how good the vectors are; seeded random towers (retrieval.towers.init)
exported with the real exporter, random unit item vectors and the real TenantIndex give the exact files a trained
version has (retrieval.package) in seconds. The manifest is the one promotion.retriever_daily registers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.core import layout
from feedloop.promotion.registry import Registry
from feedloop.retrieval import export, towers
from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.inputs import ITEM_FEATS

TOPICS = 6


@dataclass(frozen=True)
class RetrieverVersion:
    version: str
    files: dict[str, bytes]
    manifest: dict


def make_version(version: str, *, item_ids: Sequence[str], tenant_ids: Sequence[str], user_ids: Sequence[str],
                 seed: int, id_dim: int = 8, hidden: int = 16, out_dim: int = 16, m: int = 16,
                 ef_construction: int = 64, ef_search: int = 64) -> RetrieverVersion:
    """A version whose users are `user_ids` (anyone else: the out-of-vocabulary row) over the given catalog."""
    rng = np.random.default_rng(seed)
    shape = towers.Shape(users=len(user_ids) + 1, items=len(item_ids) + 1, topics=TOPICS + 1, authors=1,
                         query_feats=1 + TOPICS + 1, item_feats=ITEM_FEATS, content=0, id_dim=id_dim, hidden=hidden,
                         out_dim=out_dim)
    params = towers.init(shape, seed)
    vectors = rng.standard_normal((len(item_ids), out_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = TenantIndex.build(vectors, list(item_ids), list(tenant_ids), m=m, ef_construction=ef_construction,
                              ef_search=ef_search)
    feats = rng.uniform(0, 1, (len(user_ids), shape.query_feats)).astype(np.float32)
    users = pa.table({"user_id": pa.array(list(user_ids), pa.string()),
                      "feats": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), shape.query_feats)})
    out = io.BytesIO()
    pq.write_table(users, out, compression="zstd")
    vocabs = {"users": list(user_ids), "items": list(item_ids), "topics": [f"topic-{k}" for k in range(TOPICS)],
              "authors": []}
    files = {"query.onnx": export.query_model(params, shape), "item.onnx": export.item_model(params, shape),
             "vocabs.json": orjson.dumps(vocabs), "users.parquet": out.getvalue(), **index.to_files()}
    manifest = {"shape": shape.to_dict(), "parity": {"max_abs_diff": 0.0, "rows": 0, "threshold": 1e-4, "passed": True},
                "synthetic": True}
    return RetrieverVersion(version, files, manifest)


def registry(store, bucket: str) -> Registry:
    return Registry(store, bucket, layout.RETRIEVER)


def publish(store, bucket: str, v: RetrieverVersion) -> dict:
    """Register the version and flip retriever/live.json to it; the new pointer."""
    reg = registry(store, bucket)
    reg.register(version=v.version, files=v.files, manifest=v.manifest)
    return reg.flip(version=v.version, by="test", reason="test")
