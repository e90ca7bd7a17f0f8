"""The two towers: id embeddings and features -> a small MLP -> an L2-normalised vector.

Why this shape: a dot product of unit vectors is what the ANN index searches (inner product = cosine), and
each tower is Gather / Concat / MatMul / Add / Relu / normalise, so it is exported to ONNX op by op and the
pods need nothing but onnxruntime. Parameters are a flat dict of arrays: the ONNX export reads them as
they are, and JAX differentiates them as a pytree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from feedloop.retrieval.inputs import ITEM_FEATS, ItemInputs, QueryInputs, Vocabs, query_feats

NORM_EPS = 1e-12


@dataclass(frozen=True)
class Shape:
    """Everything that fixes the parameters' shapes; saved with the version."""

    users: int
    items: int
    topics: int
    authors: int
    query_feats: int
    item_feats: int
    content: int
    id_dim: int
    hidden: int
    out_dim: int

    @classmethod
    def of(cls, vocabs: Vocabs, *, content: int, id_dim: int, hidden: int, out_dim: int) -> Shape:
        return cls(vocabs.users.size, vocabs.items.size, vocabs.topics.size, vocabs.authors.size,
                   query_feats(vocabs), ITEM_FEATS, content, id_dim, hidden, out_dim)

    @property
    def query_width(self) -> int:
        return self.id_dim + self.query_feats + self.content

    @property
    def item_width(self) -> int:
        return 3 * self.id_dim + self.item_feats + self.content

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def init(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    """Small random embeddings, He-scaled dense layers, zero biases: float32, the same for the same seed."""
    rng = np.random.default_rng(seed)

    def normal(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    d, h, o = shape.id_dim, shape.hidden, shape.out_dim
    params = {"user_emb": normal(shape.users, d, 0.1), "item_emb": normal(shape.items, d, 0.1),
              "topic_emb": normal(shape.topics, d, 0.1), "author_emb": normal(shape.authors, d, 0.1)}
    for tower, width in (("q", shape.query_width), ("i", shape.item_width)):
        params |= {f"{tower}_w1": normal(width, h, np.sqrt(2 / width)), f"{tower}_b1": np.zeros(h, np.float32),
                   f"{tower}_w2": normal(h, o, np.sqrt(2 / h)), f"{tower}_b2": np.zeros(o, np.float32)}
    return params


def query_tower(params, x: QueryInputs, xp=np):
    """[N, out_dim] unit vectors. `xp`: numpy, or jax.numpy inside training (the same code differentiates)."""
    parts = [xp.take(params["user_emb"], x.user, axis=0), x.feats, x.profile]
    return _mlp(params, "q", xp.concatenate(parts, axis=1), xp)


def item_tower(params, x: ItemInputs, xp=np):
    parts = [xp.take(params["item_emb"], x.item, axis=0), xp.take(params["topic_emb"], x.topic, axis=0),
             xp.take(params["author_emb"], x.author, axis=0), x.feats, x.content]
    return _mlp(params, "i", xp.concatenate(parts, axis=1), xp)


def _mlp(params, tower: str, x, xp):
    h = xp.maximum(x @ params[f"{tower}_w1"] + params[f"{tower}_b1"], 0.0)
    out = h @ params[f"{tower}_w2"] + params[f"{tower}_b2"]
    return out / xp.maximum(xp.sqrt(xp.sum(out * out, axis=1, keepdims=True)), NORM_EPS)
