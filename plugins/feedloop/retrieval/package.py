"""A trained retriever as the files of a registered version, and the query side a pod rebuilds from them.

query.onnx, item.onnx     the towers (feedloop.retrieval.export)
vocabs.json               users, items, topics, authors: row k + 1 is ids[k], row 0 everything else
users.parquet             user_id, feats[, profile]: the query tower's window features per user at training time
index/...                 the per-tenant ANN index over every catalog item's vector (feedloop.retrieval.index)

Why the user features travel with the version: the query tower was trained on the window's shares and
profiles, so serving must read the same numbers; a user with no row (new since) gets zeros, as in training.
"""

from __future__ import annotations

import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.retrieval import export
from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.inputs import OOV, QueryInputs
from feedloop.retrieval.towers import Shape
from feedloop.retrieval.train import Retriever


def version_files(model: Retriever, index: TenantIndex) -> dict[str, bytes]:
    """Every file of the version but the manifest (which the registry writes last, with their hashes)."""
    users = model.features.users
    columns = {"user_id": pa.array(model.features.user_ids.tolist(), pa.string()), "feats": _rows(users.feats)}
    if model.shape.content:  # Arrow has no zero-width fixed-size list
        columns["profile"] = _rows(users.profile)
    table = pa.table(columns)
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return {"query.onnx": export.query_model(model.params, model.shape),
            "item.onnx": export.item_model(model.params, model.shape),
            "vocabs.json": orjson.dumps(model.features.vocabs.to_dict()),
            "users.parquet": out.getvalue(), **index.to_files()}


class QueryEncoder:
    """The query side of a registered version: user ids -> unit vectors, with onnxruntime only."""

    def __init__(self, files: dict[str, bytes], shape: Shape, *, threads: int | None = None):
        """threads: onnxruntime's intra-op threads (a pod runs 1, as its ranker; None: onnxruntime's default)."""
        import onnxruntime as ort  # lazy: onnxruntime loads only where a version is served or checked

        self.shape = shape
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(files["query.onnx"], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        # id -> vocabulary row, built once: Vocab.index builds its map per call, too slow per request in a pod
        self.user_rows = {u: k + 1 for k, u in enumerate(orjson.loads(files["vocabs.json"])["users"])}
        table = pq.read_table(io.BytesIO(files["users.parquet"]))
        self.row = {u: k for k, u in enumerate(table["user_id"].to_pylist())}
        self.feats = _matrix(table["feats"], shape.query_feats)
        self.profile = (_matrix(table["profile"], shape.content) if shape.content
                        else np.zeros((table.num_rows, 0), np.float32))

    def vectors(self, user_ids: list[str]) -> np.ndarray:
        found = np.array([self.row.get(u, -1) for u in user_ids], dtype=np.int64)
        known = found >= 0
        feats = np.zeros((len(found), self.shape.query_feats), np.float32)
        profile = np.zeros((len(found), self.shape.content), np.float32)
        feats[known], profile[known] = self.feats[found[known]], self.profile[found[known]]
        users = np.fromiter((self.user_rows.get(u, OOV) for u in user_ids), dtype=np.int64, count=len(user_ids))
        x = QueryInputs(users, feats, profile)
        return self.session.run([export.OUTPUT], export.query_feeds(x, self.shape))[0]


def _rows(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel(), pa.float32()),
                                             matrix.shape[1])


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, width)
