"""Both towers to ONNX, written op by op with onnx.helper, and the parity check against the JAX forward.

Why by hand: each tower is Gather / Concat / MatMul / Add / Relu / ReduceL2 / Max / Div, a dozen nodes; a
converter would bring a framework (jax2onnx, tf2onnx) for what these lines say directly. Why a parity check:
the pods will run these graphs, so what was evaluated (the JAX forward) must be what is served, compared on
the window's own users and items. The content input exists only when the catalog had embeddings.
"""

from __future__ import annotations

import numpy as np

from feedloop.retrieval import towers
from feedloop.retrieval.inputs import ItemInputs, QueryInputs
from feedloop.training.export import Parity  # the ranker's: same fields, same rule, JSON-safe

OPSET = 17  # ReduceL2 takes its axes as an attribute up to 17
IR_VERSION = 8
OUTPUT = "vector"


def query_model(params: dict[str, np.ndarray], shape: towers.Shape) -> bytes:
    """Inputs user [N] int64, feats [N, query_feats] float32, profile [N, content] (content > 0); output vector."""
    inputs = [("user", np.int64, []), ("feats", np.float32, [shape.query_feats])]
    if shape.content:
        inputs.append(("profile", np.float32, [shape.content]))
    parts = [("user_emb", "user"), "feats"] + (["profile"] if shape.content else [])
    return _tower("feedloop_query_tower", "q", params, inputs, parts, shape.out_dim)


def item_model(params: dict[str, np.ndarray], shape: towers.Shape) -> bytes:
    """Inputs item, topic, author [N] int64, feats [N, item_feats] float32, content [N, content] (content > 0)."""
    inputs = [("item", np.int64, []), ("topic", np.int64, []), ("author", np.int64, []),
              ("feats", np.float32, [shape.item_feats])]
    if shape.content:
        inputs.append(("content", np.float32, [shape.content]))
    parts = [("item_emb", "item"), ("topic_emb", "topic"), ("author_emb", "author"), "feats"]
    return _tower("feedloop_item_tower", "i", params, inputs, parts + (["content"] if shape.content else []),
                  shape.out_dim)


def query_feeds(x: QueryInputs, shape: towers.Shape) -> dict[str, np.ndarray]:
    feeds = {"user": x.user.astype(np.int64), "feats": x.feats.astype(np.float32)}
    return feeds | ({"profile": x.profile.astype(np.float32)} if shape.content else {})


def item_feeds(x: ItemInputs, shape: towers.Shape) -> dict[str, np.ndarray]:
    feeds = {"item": x.item.astype(np.int64), "topic": x.topic.astype(np.int64), "author": x.author.astype(np.int64),
             "feats": x.feats.astype(np.float32)}
    return feeds | ({"content": x.content.astype(np.float32)} if shape.content else {})


def parity(params: dict[str, np.ndarray], shape: towers.Shape, queries: QueryInputs, items: ItemInputs, *,
           threshold: float) -> Parity:
    """Max |ONNX - JAX| over both towers' vectors for the given rows."""
    import jax.numpy as jnp  # lazy: JAX loads only where a retriever is trained or checked
    import onnxruntime as ort

    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    diffs = []
    for model, feeds, forward in (
            (query_model(params, shape), query_feeds(queries, shape), towers.query_tower(jparams, queries, jnp)),
            (item_model(params, shape), item_feeds(items, shape), towers.item_tower(jparams, items, jnp))):
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        diffs.append(float(np.max(np.abs(session.run([OUTPUT], feeds)[0] - np.asarray(forward)), initial=0.0)))
    # L2-normalised vectors: every value is within [-1, 1], where the scaled difference is the absolute one
    return Parity(max(diffs), len(queries.user) + len(items.item), threshold, max_scaled_diff=max(diffs))


def _tower(name: str, prefix: str, params: dict[str, np.ndarray], inputs, parts, out_dim: int) -> bytes:
    """Gather each id embedding, concat with the dense inputs, two dense layers with ReLU between, normalise."""
    from onnx import TensorProto, helper, numpy_helper  # lazy: onnx loads only where a model is exported

    dtype = {np.int64: TensorProto.INT64, np.float32: TensorProto.FLOAT}
    graph_inputs = [helper.make_tensor_value_info(n, dtype[t], ["N", *dims]) for n, t, dims in inputs]
    weights = [f"{prefix}_w1", f"{prefix}_b1", f"{prefix}_w2", f"{prefix}_b2"]
    used = [p[0] for p in parts if isinstance(p, tuple)] + weights
    initializers = [numpy_helper.from_array(params[k].astype(np.float32), k) for k in used]
    initializers.append(numpy_helper.from_array(np.array(towers.NORM_EPS, np.float32), "eps"))
    nodes, concat = [], []
    for part in parts:
        if isinstance(part, tuple):
            table, ids = part
            nodes.append(helper.make_node("Gather", [table, ids], [f"{table}_rows"], axis=0))
            concat.append(f"{table}_rows")
        else:
            concat.append(part)
    nodes += [
        helper.make_node("Concat", concat, ["x"], axis=1),
        helper.make_node("MatMul", ["x", weights[0]], ["h0"]),
        helper.make_node("Add", ["h0", weights[1]], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", weights[2]], ["o0"]),
        helper.make_node("Add", ["o0", weights[3]], ["o"]),
        helper.make_node("ReduceL2", ["o"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["norm_eps"]),
        helper.make_node("Div", ["o", "norm_eps"], [OUTPUT]),
    ]
    output = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", out_dim])
    graph = helper.make_graph(nodes, name, graph_inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="feedloop")
    model.ir_version = IR_VERSION
    return model.SerializeToString()
