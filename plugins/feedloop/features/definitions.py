"""Ranking features, defined once for training and serving.

Both sides start from the same raw inputs: windowed engagement counts per entity, read from a
feature snapshot "as of the start of a day" (training: the impression's day; serving: the day
the model was trained for), plus request context. `derive` turns those inputs into the model's
feature matrix, so the training set and the serving pods cannot drift apart.

Counts are by ARRIVAL day (the sink's ingest_ts): an event the platform had not received by the
start of the impression's day never contributes, however early its event_ts claims to be. The content
profile (feedloop.features.content_profile) follows the same rule: a user's engagements count for day d
only if they arrived before d.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from feedloop.contract.events import DEVICES, SURFACES

CTR_PRIOR = 0.05          # smoothed rates start here ...
CTR_PRIOR_WEIGHT = 20.0   # ... and move away from it as impressions accumulate


@dataclass(frozen=True)
class Entity:
    """A snapshot table: windowed counts per key, e.g. (user_id) over the last 7 and 28 days."""

    name: str
    keys: tuple[str, ...]
    windows: tuple[int, ...]
    counts: tuple[str, ...]

    def columns(self) -> list[str]:
        return [count_column(self.name, c, w) for w in self.windows for c in self.counts]


def count_column(entity: str, count: str, window: int) -> str:
    return f"{entity}_{count}_{window}d"


ENTITIES: tuple[Entity, ...] = (
    Entity("user", ("user_id",), (7, 28), ("impr", "click")),
    Entity("item", ("item_id",), (1, 7), ("impr", "click", "like", "share")),
    Entity("author", ("author_id",), (7,), ("impr", "click")),
    Entity("user_author", ("user_id", "author_id"), (28,), ("impr", "click")),
    Entity("user_topic", ("user_id", "topic"), (28,), ("impr", "click")),
)
MAX_WINDOW = max(w for e in ENTITIES for w in e.windows)
COUNT_COLUMNS = tuple(c for e in ENTITIES for c in e.columns())
CONTEXT_COLUMNS = ("request_ts", "item_created_at", "tenant_id", "surface", "device")


@dataclass(frozen=True)
class ContentProfile:
    """A user's content profile as of the start of day d, from item embeddings (feedloop.features.content_profile).

    Why declared here and not in the config: the half-life and K decide what a snapshot's profile vectors and
    recent-positive lists hold, so they are part of the definitions a model was trained with; the manifest records
    them and definition_version hashes them, so a model never binds to a snapshot built with other values.
    Dwell is not a positive: every dwell event follows a click of the same impression (the click already counts),
    and a short dwell is closer to a bounce than to interest.
    """

    events: tuple[str, ...]        # engagements that make an item a positive of the user
    window_days: int               # arrival days [d - window_days, d) count
    half_life_days: float          # exponential decay by arrival time, relative to the start of d
    recent_k: int                  # the K most recent distinct positive items

    def describe(self) -> dict[str, Any]:
        return {"events": list(self.events), "window_days": self.window_days,
                "half_life_days": self.half_life_days, "recent_k": self.recent_k}


CONTENT = ContentProfile(events=("click", "like", "share"), window_days=MAX_WINDOW, half_life_days=7.0, recent_k=5)
CONTENT_COLUMNS = ("user_item_content_cos", "recent_positive_content_sim")   # inputs, computed by content_profile


def smoothed_rate(events: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    return (events + CTR_PRIOR * CTR_PRIOR_WEIGHT) / (impressions + CTR_PRIOR_WEIGHT)


Inputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str                       # "numeric" | "categorical"
    compute: Callable[[Inputs], np.ndarray]
    default: float = 0.0            # value for an unknown entity (no counts yet)


def _count(col: str) -> Feature:
    return Feature(col, "numeric", lambda x: x[col])


def _rate(name: str, events: str, impressions: str) -> Feature:
    return Feature(name, "numeric", lambda x: smoothed_rate(x[events], x[impressions]), default=CTR_PRIOR)


def _item_age_hours(x: Inputs) -> np.ndarray:
    return (x["request_ts"] - x["item_created_at"]) / 3600.0


FEATURES: tuple[Feature, ...] = (
    _count("user_impr_7d"), _rate("user_ctr_7d", "user_click_7d", "user_impr_7d"),
    _count("user_impr_28d"), _rate("user_ctr_28d", "user_click_28d", "user_impr_28d"),
    _count("item_impr_1d"), _rate("item_ctr_1d", "item_click_1d", "item_impr_1d"),
    _count("item_impr_7d"), _rate("item_ctr_7d", "item_click_7d", "item_impr_7d"),
    _rate("item_like_rate_7d", "item_like_7d", "item_impr_7d"),
    _rate("item_share_rate_7d", "item_share_7d", "item_impr_7d"),
    _count("author_impr_7d"), _rate("author_ctr_7d", "author_click_7d", "author_impr_7d"),
    _count("user_author_impr_28d"), _count("user_author_click_28d"),
    _rate("user_author_ctr_28d", "user_author_click_28d", "user_author_impr_28d"),
    _count("user_topic_impr_28d"), _count("user_topic_click_28d"),
    _rate("user_topic_ctr_28d", "user_topic_click_28d", "user_topic_impr_28d"),
    Feature("item_age_hours", "numeric", _item_age_hours),  # unknown to the catalog snapshot: a new item
    Feature("tenant_id", "categorical", lambda x: x["tenant_id"]),
    Feature("surface", "categorical", lambda x: x["surface"]),
    Feature("device", "categorical", lambda x: x["device"]),
    # Last, so a model trained before them has the leading columns. NaN when the user has no profile or the item no
    # embedding: LightGBM and onnxruntime route it as missing.
    Feature("user_item_content_cos", "numeric", lambda x: x["user_item_content_cos"], default=math.nan),
    Feature("recent_positive_content_sim", "numeric", lambda x: x["recent_positive_content_sim"], default=math.nan),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
BY_NAME = {f.name: f for f in FEATURES}


def categories(tenants: Sequence[str]) -> dict[str, list[str]]:
    """Fixed category lists (the contract's enums and the configured tenants): codes never shift."""
    return {"tenant_id": list(tenants), "surface": list(SURFACES), "device": list(DEVICES)}


def derive(inputs: Inputs, cats: Mapping[str, Sequence[str]], names: Sequence[str] = FEATURE_NAMES, *,
           order: str = "C") -> np.ndarray:
    """The model's float32 matrix [rows, features]; categoricals as codes, unseen values NaN.

    names: the features a model was trained on, in its order (its manifest's): a model registered before a
    feature was added keeps being served the columns it knows. order: "C" (row-major) is what a session scores;
    "F" suits a caller that takes the matrix apart into columns (the training set): the matrix is filled a column
    at a time, and row-major that was a strided write per value (60-90 ms against 7-8 ms a 200k-row batch)."""
    n = len(next(iter(inputs.values())))
    out = np.empty((n, len(names)), dtype=np.float32, order=order)
    for j, feature in enumerate(BY_NAME[name] for name in names):
        values = feature.compute(inputs)
        if feature.kind == "categorical":
            out[:, j] = encode(values, cats[feature.name])
        else:
            out[:, j] = np.asarray(values, dtype=np.float64)
    return out


def encode(values: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray, levels: Sequence[str]) -> np.ndarray:
    """Category codes as float32; values not in `levels` (and nulls) NaN."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):  # the training set's columns: no Python object per row
        codes = pc.index_in(values, value_set=pa.array(list(levels), type=values.type))
        return pc.fill_null(codes.cast(pa.float32()), np.nan).to_numpy(zero_copy_only=False)
    lookup = {v: float(i) for i, v in enumerate(levels)}
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.strides == (0,) and len(values):
        return np.full(len(values), lookup.get(values[0], np.nan), np.float32)   # one value broadcast (a request's)
    # map() over dict.get, not a generator
    return np.fromiter(map(lookup.get, values, repeat(np.nan)), dtype=np.float32, count=len(values))


def column(name: str) -> str:
    """The training-set column of a feature (prefixed: tenant_id etc. are also plain id columns)."""
    return f"f_{name}"


def manifest(tenants: Sequence[str], *, objective: str) -> dict:
    """The feature manifest saved with every model: names, kinds, defaults, category levels, snapshot entities."""
    cats = categories(tenants)
    return {
        "objective": objective,
        "label": "label",
        "binary_label": "label_binary",
        "group": "request_id",
        "features": [
            {"name": f.name, "column": column(f.name), "kind": f.kind, "dtype": "float32",
             "default": None if math.isnan(f.default) else f.default,
             **({"categories": cats[f.name]} if f.kind == "categorical" else {})}
            for f in FEATURES
        ],
        "entities": [{"name": e.name, "keys": list(e.keys), "windows": list(e.windows), "counts": list(e.counts)}
                     for e in ENTITIES],
        "content": CONTENT.describe(),
    }


def definition_version(feature_manifest: Mapping[str, Any]) -> str:
    """A stable hash of what a feature snapshot must agree on: feature names, kinds and categories, and
    the snapshot's entities (keys, windows, counts).

    Why from the manifest: a model carries its manifest, so a pod can tell which published snapshots
    that model may be served with; objective, labels and defaults are left out (they do not change
    what a snapshot holds). A manifest from before entities were recorded hashes differently, so such
    a model keeps its own registered snapshot. The content profile's parameters are hashed only when the
    manifest has them: a manifest from before them keeps its hash, so its model keeps the published
    snapshots of its own definitions.
    """
    defined = {
        "features": [{"name": f["name"], "kind": f["kind"], "categories": f.get("categories")}
                     for f in feature_manifest.get("features", [])],
        "entities": feature_manifest.get("entities"),
        **({"content": feature_manifest["content"]} if "content" in feature_manifest else {}),
    }
    return hashlib.sha256(orjson.dumps(defined, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
