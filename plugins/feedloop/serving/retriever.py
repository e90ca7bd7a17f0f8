"""Load one registered retriever version for serving, verified end to end like a ranker before it takes traffic.

Why every file is hashed: the query tower, the vocabularies, the users' features and each tenant's index all
decide which items a user is offered; a wrong byte in any of them changes what is retrieved without any error.
query.onnx must match the sha256 in retriever/live.json and the manifest, every other file the manifest's sha256
and size (the registry records both for every file). Then the tower and every index must fit the manifest's
shape, and a warm-up must encode a known and an unknown user to finite unit vectors and search an index.

Why the files are named by code: the fixed files are listed here and the index files are index/<tenant>.faiss for
the tenants of index/items.json (a tenant name with a "/" or a leading "." is refused), so a manifest cannot send
a pod to any other key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedloop.retrieval.index import IDS_FILE, TenantIndex
from feedloop.retrieval.package import QueryEncoder
from feedloop.retrieval.towers import Shape
from feedloop.serving.model import MANIFEST, SHA256, SwapRefused, Target, first_line, verify_file

QUERY = "query.onnx"
FIXED_FILES = (QUERY, "vocabs.json", "users.parquet", IDS_FILE)  # then index/<tenant>.faiss per tenant
UNIT_TOLERANCE = 1e-3  # the towers normalise their output: a warm-up vector further from length 1 is broken
WARMUP_USER = "\x00feedloop-warm-up"  # in no vocabulary: exercises the out-of-vocabulary row


def index_file(tenant: str) -> str:
    return f"index/{tenant}.faiss"


@dataclass
class LoadedRetriever:
    """A verified, warmed-up retriever version: its query tower and the per-tenant ANN index."""

    target: Target
    manifest: dict[str, Any]
    encoder: QueryEncoder
    index: TenantIndex
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @property
    def version(self) -> str:
        return self.target.version

    def candidates(self, tenant_id: str, user_id: str, k: int) -> list[str]:
        """The tenant's top k items for the user, best first (an unknown user: the out-of-vocabulary row and
        zero features, as in training; an unknown tenant: none)."""
        import faiss  # already loaded by build

        faiss.omp_set_num_threads(1)  # OpenMP's thread count is per thread: the request's, not the watcher's
        ids, _ = self.index.search(tenant_id, self.encoder.vectors([user_id]), k)
        return ids[0]

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "uri": self.target.uri, "sha256": self.target.sha256,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
                "load_seconds": round(self.load_seconds, 3), "logical_date": self.manifest.get("logical_date"),
                "users": len(self.encoder.row), "items": {t: len(ids) for t, ids in self.index.item_ids.items()}}


class _Artifact(BaseModel):
    model_config = ConfigDict(strict=True)
    sha256: str = Field(pattern=SHA256.pattern)
    bytes: int = Field(ge=0)


class _Manifest(BaseModel):
    """The part of a retriever's manifest.json a pod relies on."""

    model_config = ConfigDict(strict=True)
    version: str
    artifacts: dict[str, _Artifact]
    shape: dict[str, int]
    logical_date: str | None = None


def parse_manifest(target: Target, body: bytes) -> tuple[dict[str, Any], Shape]:
    """The manifest and the towers' shape, or SwapRefused naming what is wrong."""
    try:
        manifest = orjson.loads(body)
        _Manifest.model_validate(manifest)
        shape = Shape(**manifest["shape"])
    except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} is not a retriever manifest "
                                          f"({first_line(exc)})") from None
    if manifest["version"] != target.version:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} describes {manifest['version'][:80]!r}, "
                                          f"not {target.version}")
    listed = manifest["artifacts"].get(QUERY)
    if listed is None:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} lists no {QUERY}")
    if listed["sha256"] != target.sha256:
        raise SwapRefused("sha256_mismatch", f"{target.version}: the pointer says {QUERY} has sha256 "
                                             f"{target.sha256[:12]}..., the manifest {listed['sha256'][:12]}...")
    return manifest, shape


def tenants(target: Target, ids_body: bytes) -> list[str]:
    """The tenants of a verified index/items.json, each a safe file name, or SwapRefused."""
    try:
        names = list(orjson.loads(ids_body)["items"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise SwapRefused("bad_index", f"{target.uri}{IDS_FILE} holds no tenant -> items map "
                                       f"({first_line(exc)})") from None
    bad = [t for t in names if not isinstance(t, str) or not t or "/" in t or t.startswith(".")]
    if bad:
        raise SwapRefused("bad_index", f"{target.uri}{IDS_FILE}: tenant {str(bad[0])[:80]!r} cannot name an index "
                                       "file (empty, a '/' or a leading '.')")
    return names


def build(target: Target, manifest: dict[str, Any], shape: Shape, files: Mapping[str, bytes], *, onnx_threads: int,
          warmup_k: int) -> LoadedRetriever:
    """Hash check of every file, encoder, index, shape checks and warm-up: a LoadedRetriever or SwapRefused."""
    t0 = time.perf_counter()
    for name, body in files.items():
        verify_file(target, manifest, name, body)
    try:
        encoder = QueryEncoder(dict(files), shape, threads=onnx_threads)
    except Exception as exc:  # noqa: BLE001 - onnxruntime, orjson and pyarrow each raise their own types
        raise SwapRefused("invalid_onnx", f"{target.version}: the query tower does not load ({first_line(exc)})"
                          ) from None
    try:
        index = TenantIndex.from_files(dict(files))
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError for a corrupt index, KeyError for a gap
        raise SwapRefused("bad_index", f"{target.version}: the index does not load ({first_line(exc)})") from None
    for tenant, ann in index.indexes.items():
        if ann.d != shape.out_dim or ann.ntotal != len(index.item_ids[tenant]):
            raise SwapRefused("bad_index", f"{target.version}: index of {tenant} holds {ann.ntotal} vectors of width "
                                           f"{ann.d}; expected {len(index.item_ids[tenant])} of width {shape.out_dim}")
    model = LoadedRetriever(target, manifest, encoder, index)
    _warm_up(model, shape, warmup_k)
    model.load_seconds = time.perf_counter() - t0
    return model


def _warm_up(model: LoadedRetriever, shape: Shape, k: int) -> None:
    """A known and an unknown user to unit vectors, then one search per tenant (faiss allocates on first use)."""
    users = [next(iter(model.encoder.row), WARMUP_USER), WARMUP_USER]
    try:
        vectors = model.encoder.vectors(users)
    except Exception as exc:  # noqa: BLE001 - a graph that loads but cannot run
        raise SwapRefused("invalid_onnx", f"{model.version}: the warm-up query failed ({first_line(exc)})") from None
    if vectors.shape != (2, shape.out_dim) or not np.all(np.isfinite(vectors)):
        raise SwapRefused("nan_scores", f"{model.version}: the warm-up query gave {vectors.shape} vectors, not finite "
                                        f"[2, {shape.out_dim}]")
    if np.max(np.abs(np.linalg.norm(vectors, axis=1) - 1.0)) > UNIT_TOLERANCE:
        raise SwapRefused("nan_scores", f"{model.version}: the query tower's vectors are not unit length")
    for tenant in model.index.indexes:
        model.index.search(tenant, vectors[:1], k)
