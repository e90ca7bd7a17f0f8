"""Training the towers: in-batch sampled softmax over the window's positives, with the log-Q correction.

Why in-batch negatives: the other positives of a batch are items someone engaged with, a free sample of
negatives. Why log-Q: that sample is drawn in proportion to popularity, so a popular item is a negative far
more often than the catalog's share of it; subtracting log(its share of the positives) from every logit
removes the bias that would otherwise push popular items down (Yi et al., RecSys 2019). Why negatives only from
the same tenant: retrieval searches one tenant's catalog, so another tenant's item teaches nothing it needs.
The same positives, settings and seed give the same parameters (shuffles from a seeded numpy generator, JAX
on CPU).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feedloop.core.config import RetrievalSettings
from feedloop.retrieval import inputs as retrieval_inputs
from feedloop.retrieval import towers
from feedloop.retrieval.inputs import Features, ItemInputs, QueryInputs
from feedloop.retrieval.items import Catalog

MASKED = -1e9  # a logit that softmax gives no weight to (finite: no NaN in the gradient)


@dataclass(frozen=True)
class Retriever:
    """A trained model: its shapes, parameters, and the window features its query tower reads."""

    shape: towers.Shape
    params: dict[str, np.ndarray]
    features: Features
    epoch_losses: tuple[float, ...]
    examples: int
    seconds: float

    def query_vectors(self, user_ids) -> np.ndarray:
        return towers.query_tower(self.params, self.features.queries(user_ids))

    def item_vectors(self, item_ids) -> np.ndarray:
        return towers.item_tower(self.params, self.features.items(item_ids))


def in_batch_loss(q, i, log_q, tenant, item, temperature: float):
    """Mean softmax cross-entropy of each query against every item of the batch, its own item the label.

    q, i: [B, D] unit vectors of the batch's pairs; log_q: [B] log sampling share of each pair's item;
    tenant, item: [B] codes. Masked: other tenants' items, and the same item seen again in another pair
    (not a negative for this user)."""
    import jax.numpy as jnp  # lazy: JAX loads only where a retriever is trained
    from jax.scipy.special import logsumexp

    logits = q @ i.T / temperature - log_q[None, :]
    eye = jnp.eye(q.shape[0], dtype=bool)
    masked = (tenant[:, None] != tenant[None, :]) | ((item[:, None] == item[None, :]) & ~eye)
    logits = jnp.where(masked, MASKED, logits)
    return jnp.mean(logsumexp(logits, axis=1) - jnp.diagonal(logits))


def train(positives: pa.Table, catalog: Catalog, cfg: RetrievalSettings, impressions: pa.Table | None = None
          ) -> Retriever:
    """Towers trained on every positive (tenant_id, user_id, item_id, d) of the window; `impressions` per item
    (item_id, impressions) of the same window feed the item tower (None: zeros)."""
    import jax.numpy as jnp  # lazy: JAX loads only where a retriever is trained

    t0 = time.perf_counter()
    features = retrieval_inputs.build(positives, catalog, impressions, min_user_positives=cfg.min_user_positives,
                                      min_item_positives=cfg.min_item_positives)
    shape = towers.Shape.of(features.vocabs, content=catalog.content_dim, id_dim=cfg.id_dim, hidden=cfg.hidden,
                            out_dim=cfg.out_dim)
    users = np.array(positives["user_id"].to_pylist(), dtype=object)
    items = np.array(positives["item_id"].to_pylist(), dtype=object)
    _, tenant = np.unique(np.array(positives["tenant_id"].to_pylist(), dtype=object), return_inverse=True)
    item_ids, item_row = np.unique(items, return_inverse=True)
    log_q = _log_q(np.bincount(item_row), features.items(item_ids).feats[:, 1], cfg.log_q)[item_row]
    query_x = features.queries(users)
    item_x = features.items(item_ids).take(item_row)

    optimizer, step = _step(cfg.learning_rate, cfg.weight_decay, cfg.temperature)
    params = {k: jnp.asarray(v) for k, v in towers.init(shape, cfg.seed).items()}
    state = optimizer.init(params)
    rng = np.random.default_rng(cfg.seed + 1)
    losses = []
    for _ in range(cfg.epochs):
        batch_losses = []
        for rows in _batches(rng.permutation(len(users)), cfg.batch_size):
            q_arrays = _arrays(query_x.take(rows))
            i_arrays = _arrays(item_x.take(rows))
            params, state, loss = step(params, state, q_arrays, i_arrays, log_q[rows], tenant[rows].astype(np.int32),
                                       item_row[rows].astype(np.int32))
            batch_losses.append(float(loss))
        losses.append(float(np.mean(batch_losses)))
    return Retriever(shape, {k: np.asarray(v) for k, v in params.items()}, features, tuple(losses), len(users),
                     round(time.perf_counter() - t0, 2))


@functools.lru_cache(maxsize=8)
def _step(learning_rate: float, weight_decay: float, temperature: float):
    """The optimizer and the jit-compiled training step, one per setting: JAX caches the compiled step per
    input shape, so a second training with the same shapes (tests, a re-run) skips the compile."""
    import jax  # lazy: JAX loads only where a retriever is trained
    import jax.numpy as jnp
    import optax

    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_of(params, q_arrays, i_arrays, lq, t, it):
        q = towers.query_tower(params, QueryInputs(*q_arrays), jnp)
        i = towers.item_tower(params, ItemInputs(*i_arrays), jnp)
        return in_batch_loss(q, i, lq, t, it, temperature)

    @jax.jit
    def step(params, state, q_arrays, i_arrays, lq, t, it):
        loss, grads = jax.value_and_grad(loss_of)(params, q_arrays, i_arrays, lq, t, it)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return optimizer, step


def _log_q(positives: np.ndarray, log1p_impressions: np.ndarray, kind: str) -> np.ndarray:
    """Per item, what is subtracted from its logits. "sampling": log of its share of the positives (how often it
    is an in-batch negative): the towers then learn log p(item | user), exposure included. "exposure": that
    minus log of its share of the impressions (+1 each): the towers learn how likely the user is to take the
    item when shown, with what the logged policy chose to show divided out."""
    log_q = np.log(positives / positives.sum())
    if kind == "exposure":
        shown = np.expm1(log1p_impressions) + 1.0
        log_q -= np.log(shown / shown.sum())
    return log_q.astype(np.float32)


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Full batches only (one jit-compiled shape); the remainder is a batch only when it is all there is.
    A shuffle per epoch puts the left-out rows in other batches the next time."""
    full = len(order) // size
    return [order[k * size:(k + 1) * size] for k in range(full)] or [order]


def _arrays(x) -> tuple[np.ndarray, ...]:
    """A dataclass of arrays as a tuple JAX can trace; ids as int32 (JAX's default integer width)."""
    return tuple(a.astype(np.int32) if a.dtype == np.int64 else a for a in vars(x).values())
