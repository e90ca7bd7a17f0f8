"""A tiny catalog and window of positives for the retrieval tests, built by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa

from feedloop.core.config import RetrievalSettings
from feedloop.retrieval.items import Catalog

CONFIG = RetrievalSettings(id_dim=4, hidden=8, out_dim=4, epochs=3, batch_size=8, seed=3)


def catalog(content_dim: int = 0) -> Catalog:
    """12 items, two tenants, three topics; unit content vectors when content_dim > 0."""
    n = 12
    rng = np.random.default_rng(1)
    content = rng.normal(size=(n, content_dim)).astype(np.float32)
    content /= np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    return Catalog(np.array([f"i{k:02d}" for k in range(n)], dtype=object),
                   np.array(["acme" if k < 8 else "globex" for k in range(n)], dtype=object),
                   np.array([f"topic-{k % 3}" for k in range(n)], dtype=object),
                   np.array([f"a{k % 4}" for k in range(n)], dtype=object), np.zeros(n), content)


def positives() -> pa.Table:
    """Users u0-u5 of acme engage with topic (user mod 3) items; u6-u7 of globex with items 8-11."""
    rows = [("acme", f"u{u}", f"i{k:02d}") for u in range(6) for k in range(8) if k % 3 == u % 3]
    rows += [("globex", f"u{u}", f"i{k:02d}") for u in (6, 7) for k in range(8, 12)]
    tenant, user, item = zip(*rows)
    return pa.table({"tenant_id": list(tenant), "user_id": list(user), "item_id": list(item),
                     "d": pa.array([date(2026, 11, 1)] * len(rows), pa.date32())})
