"""Registered versions for the serving tests, in the exact shape the promotion DAG registers them.

A small world (users, items, authors, topics) has a feature snapshot with the real entity tables
of feedloop.features.definitions; a LightGBM LambdaRank model is trained on rows derived from that snapshot
through the serving code path, exported to ONNX and registered with its sample predictions. The
`bad_*` helpers register (or tamper with) versions that a pod must refuse, one reason each.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedloop.training import export
from feedloop.features import snapshots as feature_snapshots
from feedloop.features import definitions as features
from feedloop.promotion.registry import Registry, sha256
from feedloop.serving.snapshot import Snapshot

TENANT = "acme"
USERS = [f"acme-u{i:03d}" for i in range(40)]
ITEMS = [f"acme-i{i:04d}" for i in range(300)]
AUTHORS = [f"acme-a{i:02d}" for i in range(20)]
TOPICS = [f"topic-{i}" for i in range(6)]
T0 = 1_795_000_000.0  # seconds; requests are scored around here


def snapshot_files(seed: int) -> dict[str, bytes]:
    """features/<entity>.parquet and features/items.parquet of a random but fixed world."""
    rng = np.random.default_rng(seed)
    item_author = {i: AUTHORS[k % len(AUTHORS)] for k, i in enumerate(ITEMS)}
    item_topic = {i: TOPICS[k % len(TOPICS)] for k, i in enumerate(ITEMS)}
    keys = {
        "user": {"user_id": USERS[:30]},                     # 10 users unknown to the snapshot
        "item": {"item_id": ITEMS[:250]},                    # 50 new items
        "author": {"author_id": AUTHORS},
        "user_author": {"user_id": [u for u in USERS[:30] for _ in range(3)],
                        "author_id": [AUTHORS[(k * 7 + j) % 20] for k in range(30) for j in range(3)]},
        "user_topic": {"user_id": [u for u in USERS[:30] for _ in range(2)],
                       "topic": [TOPICS[(k + j) % 6] for k in range(30) for j in range(2)]},
    }
    files = {}
    for entity in features.ENTITIES:
        cols = dict(keys[entity.name])
        n = len(next(iter(cols.values())))
        for c in entity.columns():
            impressions = rng.integers(0, 400, n).astype(np.float64)
            cols[c] = impressions if "impr" in c else np.floor(impressions * rng.uniform(0, 0.3, n))
        files[f"features/{entity.name}.parquet"] = _parquet(pa.table(cols))
    created = pa.array([int((T0 - rng.uniform(3600, 40 * 86400)) * 1000) for _ in ITEMS], pa.int64())
    files["features/items.parquet"] = _parquet(pa.table({
        "item_id": ITEMS, "topic": [item_topic[i] for i in ITEMS],
        "created_at": created.cast(pa.timestamp("ms", tz="UTC")), "author_id": [item_author[i] for i in ITEMS]}))
    return files


def publish_snapshot(store, bucket: str, *, seed: int, as_of: str, drop: str | None = None,
                     damage: Callable[[dict[str, bytes]], None] | None = None):
    """A published feature snapshot of the same world (counts drawn with `seed`) as of `as_of`, pointer moved.

    drop: a count column left out of user.parquet, in a self-consistent manifest (only the schema check sees it).
    damage: changes the files after the manifest describes them and before they are written, so the pointer moves
    to a folder that is damaged already (damaged after the move, a pod polling in between could load it whole).
    """
    files = {k[len("features/"):]: v for k, v in snapshot_files(seed).items()}
    if drop:
        table = pq.read_table(io.BytesIO(files["user.parquet"]))
        files["user.parquet"] = _parquet(table.drop_columns([drop]))
    manifest = feature_snapshots.build_manifest(
        files, as_of=as_of, definition_version=features.definition_version(features.manifest([TENANT, "globex"],
                                                                                             objective="lambdarank")),
        dataset_uri=f"s3://lake/datasets/ranker/test-{seed}/", dataset_content_hash="test", tenants=[TENANT, "globex"])
    if damage:
        damage(files)
    return feature_snapshots.publish_snapshot(store, bucket, files=files, manifest=manifest, by="tests")


def request_rows(snapshot: Snapshot, *, rng: np.random.Generator, lists: int, size: int):
    """Feature rows of `lists` random requests through the serving path; returns (matrix, group sizes, labels)."""
    cats = features.categories([TENANT, "globex"])
    mats, labels = [], []
    for _ in range(lists):
        items = list(rng.choice(ITEMS, size, replace=False))
        user = str(rng.choice(USERS))
        authors = snapshot.authors(items, [None] * size)
        inputs = snapshot.inputs(tenant_id=TENANT, user_id=user, surface=str(rng.choice(["feed", "search"])),
                                 device="ios", request_ts=T0 + rng.uniform(0, 86400), item_ids=items, author_ids=authors)
        m = features.derive(inputs, cats)
        utility = m[:, features.FEATURE_NAMES.index("item_ctr_7d")] * 20 + rng.normal(0, 0.3, size)
        labels.append(np.clip(np.digitize(utility, [1.0, 1.5, 2.0]), 0, 3))
        mats.append(m)
    return np.vstack(mats), [size] * lists, np.concatenate(labels)


def train(matrix: np.ndarray, groups: list[int], labels: np.ndarray, *, rounds: int = 30, seed: int = 7) -> str:
    import lightgbm as lgb

    cat_idx = [i for i, f in enumerate(features.FEATURES) if f.kind == "categorical"]
    data = lgb.Dataset(matrix, label=labels, group=groups, categorical_feature=cat_idx,
                       params={"max_bin": 63, "verbosity": -1})
    params = {"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 10, "learning_rate": 0.1,
              "verbose": -1, "seed": seed, "num_threads": 1}
    return lgb.train(params, data, num_boost_round=rounds).model_to_string()


@dataclass
class Version:
    version: str
    model_text: str
    files: dict[str, bytes]
    manifest: dict


def make_version(version: str, *, seed: int, rounds: int = 30) -> Version:
    """A good version: trained, exported, sample predictions recorded (not registered yet)."""
    import lightgbm as lgb

    files = snapshot_files(seed)
    snapshot = Snapshot.from_parquet({k[len("features/"):]: v for k, v in files.items()})
    matrix, groups, labels = request_rows(snapshot, rng=np.random.default_rng(seed), lists=120, size=20)
    model_text = train(matrix, groups, labels, rounds=rounds, seed=seed)
    onnx_bytes = export.to_onnx(model_text=model_text, n_features=matrix.shape[1])
    sample = matrix[:8]
    scores = lgb.Booster(model_str=model_text).predict(sample)
    manifest = {
        "feature_manifest": features.manifest([TENANT, "globex"], objective="lambdarank"),
        "lineage": {"test": version}, "params": {"seed": seed}, "logical_date": version[:10],
        "parity": {"passed": True, "max_abs_diff": 0.0, "rows": 8, "threshold": 1e-5},
        "gate": {"promotable": True, "champion": None, "summary": "test version"},
        "metrics": {"auc": 0.7, "ndcg@10": 0.6, "map": 0.5, "mrr": 0.5, "groups": 120},
        "sample": {"rows": [[None if np.isnan(v) else float(v) for v in row] for row in sample],
                   "scores": scores.tolist()},
    }
    return Version(version, model_text, {"model.txt": model_text.encode(), "model.onnx": onnx_bytes, **files}, manifest)


def register(registry: Registry, v: Version) -> dict:
    return registry.register(version=v.version, files=v.files, manifest=v.manifest)


def flip(registry: Registry, version: str, reason: str = "test") -> dict:
    return registry.flip(version=version, by="tests", reason=reason)


def sha_of_onnx(registry: Registry, version: str) -> str:
    return registry.manifest(version)["artifacts"]["model.onnx"]["sha256"]


def nan_onnx(onnx_bytes: bytes) -> bytes:
    """The same graph with every tree leaf weight NaN: loads and runs, scores NaN."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name in ("target_weights", "base_values"):
                attr.floats[:] = [float("nan")] * len(attr.floats)
            if attr.name in ("target_weights_as_tensor",):
                raise AssertionError("unexpected tensor weights")
    return model.SerializeToString()


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


__all__ = ["Version", "make_version", "register", "flip", "sha256", "nan_onnx", "sha_of_onnx", "publish_snapshot"]
