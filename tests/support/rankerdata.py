"""Hand-made training runs laid out exactly as the train step leaves them (the contract in promotion.py).

A day has ranked lists for two tenants and two surfaces; the graded label follows a known utility
(f_quality, the categorical f_topic == 2, and noise). `flip_tenant` trains a model on labels
inverted for one tenant: a candidate that is good overall but worse in that segment.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [
    {"name": "f_quality", "kind": "numeric", "dtype": "float32", "default": 0.0},
    {"name": "f_noise", "kind": "numeric", "dtype": "float32", "default": 0.0},
    {"name": "f_tenant", "kind": "numeric", "dtype": "float32", "default": 0.0},
    {"name": "f_topic", "kind": "categorical", "dtype": "float32", "default": 0.0,
     "categories": ["t0", "t1", "t2", "t3", "t4"]},
]
MANIFEST = {"objective": "lambdarank", "features": FEATURES, "label": "label", "binary_label": "label_binary",
            "group": "request_id"}
TENANTS = ("acme", "globex")
SURFACES = ("feed", "search")
LIST = 10


def day_frame(*, seed: int, lists: int = 240) -> dict[str, np.ndarray]:
    """Columns of one day: every list is one tenant and surface; some NaNs and an unseen category."""
    rng = np.random.default_rng(seed)
    n = lists * LIST
    list_id = np.repeat(np.arange(lists), LIST)
    tenant = np.array(TENANTS)[list_id % 2]
    surface = np.array(SURFACES)[(list_id // 2) % 2]
    quality = rng.normal(size=n).astype(np.float32)
    topic = rng.integers(0, 5, n).astype(np.float32)
    utility = quality + 1.2 * (topic == 2) + rng.normal(scale=0.6, size=n)
    label = np.clip(np.digitize(utility, [0.6, 1.4, 2.2]), 0, 3)
    topic[rng.random(n) < 0.02] = np.nan  # missing
    topic[rng.random(n) < 0.01] = 7.0     # a category the model never saw
    noise = rng.normal(size=n).astype(np.float32)
    noise[rng.random(n) < 0.05] = np.nan
    return {
        "request_id": np.array([f"r{seed}-{i}" for i in list_id]),
        "user_id": np.array([f"u{i % 37}" for i in list_id]),
        "item_id": np.array([f"i{j}" for j in rng.integers(0, 500, n)]),
        "tenant_id": tenant, "surface": surface,
        "position": np.tile(np.arange(1, LIST + 1), lists),
        "explore": np.repeat(np.arange(lists) % 5 == 0, LIST),  # every fifth list shown shuffled
        "label": label.astype(np.int64), "label_binary": (label > 0).astype(np.int64),
        "weight": np.ones(n), "item_popularity": (utility + rng.normal(scale=1.5, size=n)).astype(np.float64),
        "f_quality": quality, "f_noise": noise, "f_tenant": (tenant == "globex").astype(np.float32), "f_topic": topic,
    }


def train_model(frame: dict[str, np.ndarray], *, flip_tenant: str | None = None, rounds: int = 40,
                features: list[dict[str, Any]] = FEATURES) -> str:
    """A small LambdaRank model (text format) on the frame; labels inverted for flip_tenant's rows."""
    import lightgbm as lgb

    label = frame["label"].copy()
    if flip_tenant:
        rows = frame["tenant_id"] == flip_tenant
        label[rows] = 3 - label[rows]
    matrix = np.column_stack([frame[f["name"]] for f in features]).astype(np.float32)
    data = lgb.Dataset(matrix, label=label, group=[LIST] * (len(label) // LIST),
                       feature_name=[f["name"] for f in features],
                       categorical_feature=["f_topic"], free_raw_data=False)
    params = {"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 10, "learning_rate": 0.1,
              "verbose": -1, "seed": 7, "num_threads": 2, "min_data_per_group": 5, "cat_smooth": 1}
    return lgb.train(params, data, num_boost_round=rounds).model_to_string()


def write_run(store, settings, ds: str, *, model_text: str, holdout: dict[str, np.ndarray],
              manifest: dict[str, Any] | None = None, lineage: dict[str, Any] | None = None) -> None:
    """The train step's run folder and the dataset folder (holdout split, lineage, feature snapshot)."""
    models, lake = settings.s3.models_bucket, settings.s3.lake_bucket
    run, dataset = f"ranker/runs/{ds}/", f"datasets/ranker/{ds}/"
    store.put(models, run + "model.txt", model_text.encode())
    store.put_json(models, run + "feature_manifest.json", manifest or MANIFEST)
    store.put_json(models, run + "train_metrics.json", {"params": {"objective": "lambdarank", "num_leaves": 15},
                                                         "best_iteration": 40})
    buf = io.BytesIO()
    pq.write_table(pa.table(holdout), buf)
    store.put(lake, dataset + "split=holdout/part-0.parquet", buf.getvalue())
    store.put_json(lake, dataset + "lineage.json", lineage or {"window": f"..{ds}", "events": 1234})
    store.put(lake, dataset + "snapshot/items.parquet", b"PAR1-items-" + ds.encode())
    store.put(lake, dataset + "snapshot/users.parquet", b"PAR1-users-" + ds.encode())
