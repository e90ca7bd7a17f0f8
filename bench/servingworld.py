"""A production-sized registered ranker for bench/serve.py, built the way the promotion DAG registers one.

Why not tests/support/servingdata.py: its world (40 users, 300 items, 15-leaf trees, 30
rounds) keeps the tests fast, but lookups in tiny dicts and a tiny graph would flatter latency
and load time. Here the shape is DESIGN.md's measured one: LambdaRank, 300 trees of 63 leaves
over the real feedloop feature set (features.FEATURES), and a feature snapshot of 50k users,
20k items, 2k authors with per-user author and topic rows, so every request does real lookups.
Training rows come from the snapshot through the serving code path (Snapshot.inputs ->
features.derive), as the parity contract requires; labels follow a hidden utility of those
features plus noise, so the trees have signal to split on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.training import export
from feedloop.features import definitions as features
from feedloop.serving.snapshot import Snapshot

TENANTS = ["acme", "globex", "initech"]
USERS, ITEMS, AUTHORS, TOPICS = 50_000, 20_000, 2_000, 50
KNOWN_USERS, COUNTED_ITEMS = 47_500, 19_000   # the rest are new: the manifest's defaults
AUTHORS_PER_USER, TOPICS_PER_USER = 5, 3
T0 = 1_795_000_000.0  # seconds; requests are scored around here
SAMPLE_ROWS = 8


def user_id(u: int) -> str:
    return f"{TENANTS[u % 3]}-u{u:06d}"


def item_id(i: int) -> str:
    return f"{TENANTS[i % 3]}-i{i:06d}"


def author_id(a: int) -> str:
    return f"{TENANTS[a % 3]}-a{a:05d}"


@dataclass(frozen=True)
class Shape:
    """What gets trained: DESIGN.md's serving shape (300 trees, 63 leaves) by default."""

    trees: int = 300
    leaves: int = 63
    min_data_in_leaf: int = 50
    learning_rate: float = 0.05
    feature_fraction: float = 0.9
    max_bin: int = 63
    lists: int = 2_500
    list_size: int = 40

    @classmethod
    def of(cls, train) -> Shape:
        """The configured `train:` params (TrainSettings), all rounds kept: no early stopping ends it sooner."""
        return cls(trees=train.num_boost_round, leaves=train.num_leaves, min_data_in_leaf=train.min_data_in_leaf,
                   learning_rate=train.learning_rate, feature_fraction=train.feature_fraction, max_bin=train.max_bin)


@dataclass
class Version:
    version: str
    model_text: str
    files: dict[str, bytes]
    manifest: dict
    stats: dict


class World:
    """Fixed entities; `seed` changes the counts (each version has its own snapshot, as each day does)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        # items of tenant t are t, t+3, ...; authors likewise; an item's author is of its tenant
        self.item_author = rng.integers(0, AUTHORS // 3, ITEMS) * 3 + np.arange(ITEMS) % 3
        self.item_topic = rng.integers(0, TOPICS, ITEMS)
        self.item_created = T0 - rng.uniform(3600, 60 * 86400, ITEMS)
        self.item_quality = rng.beta(2, 30, ITEMS)            # hidden click rate
        self.item_reach = rng.pareto(1.2, ITEMS) * 200 + 5    # impressions per week
        self.user_activity = rng.pareto(1.5, USERS) * 30 + 2  # impressions per week
        self.user_authors = (rng.integers(0, AUTHORS // 3, (USERS, AUTHORS_PER_USER)) * 3
                             + (np.arange(USERS) % 3)[:, None])
        self.user_topics = rng.integers(0, TOPICS, (USERS, TOPICS_PER_USER))

    def snapshot_files(self) -> dict[str, bytes]:
        """features/<entity>.parquet for every features.ENTITIES and features/items.parquet."""
        rng = self.rng
        users = np.arange(KNOWN_USERS)
        items = np.arange(COUNTED_ITEMS)
        authors = np.arange(AUTHORS)
        author_reach = np.bincount(self.item_author, weights=self.item_reach, minlength=AUTHORS) + 10
        author_ctr = np.bincount(self.item_author, weights=self.item_quality * self.item_reach,
                                 minlength=AUTHORS) / author_reach
        # (user, author) and (user, topic) pairs once each, as the dataset's group-by writes them
        pairs = np.unique(np.repeat(users, AUTHORS_PER_USER) * AUTHORS + self.user_authors[users].ravel())
        pair_users, pair_authors = pairs // AUTHORS, pairs % AUTHORS
        pairs = np.unique(np.repeat(users, TOPICS_PER_USER) * TOPICS + self.user_topics[users].ravel())
        topic_users, topic_topics = pairs // TOPICS, pairs % TOPICS

        def counts(impr_per_week: np.ndarray, ctr: np.ndarray, days: int) -> tuple[np.ndarray, np.ndarray]:
            impr = rng.poisson(impr_per_week * days / 7).astype(np.float64)
            return impr, rng.binomial(impr.astype(np.int64), np.clip(ctr, 0, 1)).astype(np.float64)

        tables = {}
        cols: dict[str, object] = {"user_id": [user_id(u) for u in users]}
        for w in (7, 28):
            cols[f"user_impr_{w}d"], cols[f"user_click_{w}d"] = counts(self.user_activity[users],
                                                                       np.full(len(users), 0.06), w)
        tables["user"] = cols
        cols = {"item_id": [item_id(i) for i in items]}
        for w in (1, 7):
            impr, click = counts(self.item_reach[items], self.item_quality[items], w)
            cols[f"item_impr_{w}d"], cols[f"item_click_{w}d"] = impr, click
            cols[f"item_like_{w}d"] = rng.binomial(click.astype(np.int64), 0.2).astype(np.float64)
            cols[f"item_share_{w}d"] = rng.binomial(click.astype(np.int64), 0.05).astype(np.float64)
        tables["item"] = cols
        cols = {"author_id": [author_id(a) for a in authors]}
        cols["author_impr_7d"], cols["author_click_7d"] = counts(author_reach, author_ctr, 7)
        tables["author"] = cols
        cols = {"user_id": [user_id(u) for u in pair_users],
                "author_id": [author_id(a) for a in pair_authors]}
        cols["user_author_impr_28d"], cols["user_author_click_28d"] = counts(
            np.full(len(pair_users), 6.0), rng.beta(2, 12, len(pair_users)), 28)
        tables["user_author"] = cols
        cols = {"user_id": [user_id(u) for u in topic_users],
                "topic": [f"topic-{t}" for t in topic_topics]}
        cols["user_topic_impr_28d"], cols["user_topic_click_28d"] = counts(
            np.full(len(topic_users), 10.0), rng.beta(2, 12, len(topic_users)), 28)
        tables["user_topic"] = cols
        files = {f"features/{name}.parquet": _parquet(pa.table(c)) for name, c in tables.items()}
        files["features/items.parquet"] = _parquet(pa.table({
            "item_id": [item_id(i) for i in range(ITEMS)],
            "topic": [f"topic-{t}" for t in self.item_topic],
            "created_at": pa.array((self.item_created * 1000).astype(np.int64)).cast(pa.timestamp("ms", tz="UTC")),
            "author_id": [author_id(a) for a in self.item_author]}))
        return files


def request(rng: np.random.Generator, size: int) -> dict:
    """One /rank body: a user (5% unknown to the snapshot) and `size` candidates of the user's tenant."""
    u = int(rng.integers(0, USERS))
    tenant = u % 3
    picks = rng.choice(ITEMS // 3, size, replace=False) * 3 + tenant
    return {"tenant_id": TENANTS[tenant], "user_id": user_id(u),
            "surface": str(rng.choice(["feed", "search", "related"])),
            "device": str(rng.choice(["ios", "android", "web"])), "ts": "2026-11-24T10:00:00.000Z",
            "candidates": [{"item_id": item_id(int(i))} for i in picks]}


def matrix_of(snapshot: Snapshot, body: dict, request_ts: float) -> np.ndarray:
    """The request's feature matrix through the serving path (what a pod feeds session.run)."""
    items = [c["item_id"] for c in body["candidates"]]
    authors = snapshot.authors(items, [c.get("author_id") for c in body["candidates"]])
    inputs = snapshot.inputs(tenant_id=body["tenant_id"], user_id=body["user_id"], surface=body["surface"],
                             device=body["device"], request_ts=request_ts, item_ids=items, author_ids=authors)
    return features.derive(inputs, features.categories(TENANTS))


def make_version(version: str, *, seed: int, shape: Shape = Shape(), threads: int = 2) -> Version:
    """A trained, exported version with its sample predictions (not registered yet)."""
    import lightgbm as lgb

    world = World(seed)
    files = world.snapshot_files()
    snapshot = Snapshot.from_parquet({k[len("features/"):]: v for k, v in files.items()})
    rng = np.random.default_rng(seed + 1000)
    mats = [matrix_of(snapshot, request(rng, shape.list_size), T0 + rng.uniform(0, 86400)) for _ in range(shape.lists)]
    matrix = np.vstack(mats)
    col = {name: matrix[:, j].astype(np.float64) for j, name in enumerate(features.FEATURE_NAMES)}
    utility = (30 * col["item_ctr_7d"] + 8 * col["user_author_ctr_28d"] + 6 * col["user_topic_ctr_28d"]
               + 0.3 * np.log1p(col["item_impr_7d"]) - 0.004 * np.nan_to_num(col["item_age_hours"], nan=200.0)
               + 0.2 * (col["surface"] == 1) + rng.normal(0, 0.6, len(matrix)))
    labels = np.digitize(utility, np.quantile(utility, [0.6, 0.85, 0.96]))
    cat_idx = [i for i, f in enumerate(features.FEATURES) if f.kind == "categorical"]
    data = lgb.Dataset(matrix, label=labels, group=[shape.list_size] * shape.lists, categorical_feature=cat_idx,
                       params={"max_bin": shape.max_bin, "verbosity": -1})
    params = {"objective": "lambdarank", "num_leaves": shape.leaves, "min_data_in_leaf": shape.min_data_in_leaf,
              "learning_rate": shape.learning_rate, "feature_fraction": shape.feature_fraction, "verbose": -1,
              "seed": seed, "num_threads": threads}
    booster = lgb.train(params, data, num_boost_round=shape.trees)
    model_text = booster.model_to_string()
    onnx_bytes = export.to_onnx(model_text=model_text, n_features=matrix.shape[1])
    sample = matrix[:SAMPLE_ROWS]
    dump = booster.dump_model()["tree_info"]
    stats = {"trees": len(dump), "mean_leaves": round(float(np.mean([t["num_leaves"] for t in dump])), 1),
             "mean_depth": round(float(np.mean([_depth(t["tree_structure"]) for t in dump])), 1),
             "train_rows": int(len(matrix)), "onnx_bytes": len(onnx_bytes),
             "snapshot_bytes": sum(len(v) for v in files.values()), "snapshot_rows": snapshot.sizes()}
    manifest = {
        "feature_manifest": features.manifest(TENANTS, objective="lambdarank"),
        "lineage": {"bench": "serve", "seed": seed}, "params": params, "logical_date": version[:10],
        "parity": {"passed": True, "max_abs_diff": 0.0, "rows": SAMPLE_ROWS, "threshold": 1e-5},
        "gate": {"promotable": True, "champion": None, "summary": "bench version"},
        "metrics": {"groups": shape.lists},
        "sample": {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in sample],
                   "scores": booster.predict(sample).tolist()},
    }
    return Version(version, model_text, {"model.txt": model_text.encode(), "model.onnx": onnx_bytes, **files},
                   manifest, stats)


def _depth(node: dict) -> int:
    return 0 if "leaf_index" in node else 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def cached_version(version: str, *, seed: int, shape: Shape, root) -> tuple[Version, bool]:
    """make_version, kept under root/<key>/ so a rerun skips training; (version, True if it was cached).

    The key covers this generator, the feature definitions, the library versions, the shape and
    the seed: a change to any of them trains afresh.
    """
    import hashlib
    import json
    from pathlib import Path

    import lightgbm
    import onnxmltools

    sources = b"".join(Path(m.__file__).read_bytes() for m in (features, export)) + Path(__file__).read_bytes()
    key = hashlib.sha256(sources + repr((version, seed, shape, lightgbm.__version__,
                                         onnxmltools.__version__)).encode()).hexdigest()[:16]
    folder = Path(root) / key
    meta = folder / "version.json"
    if meta.exists():
        saved = json.loads(meta.read_text())
        files = {name: (folder / name).read_bytes() for name in saved["files"]}
        return Version(version, files["model.txt"].decode(), files, saved["manifest"], saved["stats"]), True
    built = make_version(version, seed=seed, shape=shape)
    for name, body in built.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    meta.write_text(json.dumps({"files": sorted(built.files), "manifest": built.manifest, "stats": built.stats}))
    return built, False
