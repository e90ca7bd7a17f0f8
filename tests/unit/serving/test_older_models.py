"""A version registered before the content-similarity features keeps serving on a pod that computes them: it is
served the columns it was trained on, and its manifest keeps its definition version (so its own snapshots)."""

from __future__ import annotations

import hashlib

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from feedloop.features import definitions as features
from feedloop.serving.model import ARTIFACTS, Root, SwapRefused, Target, build
from feedloop.serving.snapshot import Snapshot
from feedloop.training import export
from tests.support import servingdata

VERSIONS = Root("models", "ranker/versions/")
OLD = [n for n in features.FEATURE_NAMES if n not in features.CONTENT_COLUMNS]


def _old_manifest() -> dict:
    """The feature manifest as the builder wrote it before the content features: no `content`, 22 features."""
    m = features.manifest([servingdata.TENANT, "globex"], objective="lambdarank")
    m.pop("content")
    m["features"] = [f for f in m["features"] if f["name"] in OLD]
    return m


def _old_version(feature_manifest: dict):
    files = servingdata.snapshot_files(3)      # a registered snapshot of that time: no content columns
    snapshot = Snapshot.from_parquet({k[len("features/"):]: v for k, v in files.items()})
    rng = np.random.default_rng(3)
    rows = [snapshot.inputs(tenant_id=servingdata.TENANT, user_id=str(rng.choice(servingdata.USERS)), surface="feed",
                            device="ios", request_ts=servingdata.T0, item_ids=list(rng.choice(servingdata.ITEMS, 20)),
                            author_ids=[None] * 20) for _ in range(40)]
    cats = features.categories([servingdata.TENANT, "globex"])
    matrix = np.vstack([features.derive(x, cats, OLD) for x in rows])
    labels = np.digitize(matrix[:, OLD.index("item_ctr_7d")], [0.05, 0.1, 0.2])
    categorical = [OLD.index(c) for c in ("tenant_id", "surface", "device")]
    data = lgb.Dataset(matrix, label=labels, group=[20] * 40, categorical_feature=categorical,
                       params={"verbosity": -1})
    text = lgb.train({"objective": "lambdarank", "num_leaves": 7, "verbose": -1, "num_threads": 1}, data,
                     num_boost_round=5).model_to_string()
    files = {"model.onnx": export.to_onnx(model_text=text, n_features=len(OLD)), **files}
    artifacts = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in files.items()}
    manifest = {"version": "2026-11-21-0a1d", "artifacts": artifacts, "feature_manifest": feature_manifest,
                "logical_date": "2026-11-21",
                "sample": {"rows": matrix[:8].tolist(),
                           "scores": lgb.Booster(model_str=text).predict(matrix[:8]).tolist()}}
    target = Target(manifest["version"], VERSIONS.uri(manifest["version"]), artifacts["model.onnx"]["sha256"])
    return target, orjson.loads(orjson.dumps(manifest)), files, text


def test_a_model_trained_before_the_content_features_is_served_its_own_columns():
    target, manifest, files, text = _old_version(_old_manifest())
    model = build(target, manifest, {n: files[n] for n in ARTIFACTS}, onnx_threads=1, sample_max_abs_diff=1e-5,
                  source="s3")
    assert model.feature_names == OLD
    items = servingdata.ITEMS[:30]
    inputs = model.snapshot.inputs(tenant_id=servingdata.TENANT, user_id=servingdata.USERS[0], surface="search",
                                   device="web", request_ts=servingdata.T0, item_ids=items, author_ids=[None] * 30)
    assert np.isnan(inputs["user_item_content_cos"]).all()        # its snapshot has no profiles: NaN, unused
    matrix = features.derive(inputs, model.categories, model.feature_names)
    np.testing.assert_allclose(model.score(matrix), lgb.Booster(model_str=text).predict(matrix), atol=1e-5)


def test_an_older_manifest_keeps_its_definition_version():
    old = _old_manifest()
    before = hashlib.sha256(orjson.dumps({
        "features": [{"name": f["name"], "kind": f["kind"], "categories": f.get("categories")}
                     for f in old["features"]],
        "entities": old["entities"]}, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]    # the function as it was
    assert features.definition_version(old) == before
    new = features.manifest([servingdata.TENANT, "globex"], objective="lambdarank")
    assert features.definition_version(new) != before


def test_a_model_trained_on_a_feature_this_pod_does_not_compute_is_refused():
    m = _old_manifest()
    m["features"][-1] = {**m["features"][-1], "name": "from_the_future"}
    target, manifest, files, _ = _old_version(m)
    with pytest.raises(SwapRefused) as refused:
        build(target, manifest, {n: files[n] for n in ARTIFACTS}, onnx_threads=1, sample_max_abs_diff=1e-5,
              source="s3")
    assert refused.value.reason == "signature_mismatch" and "from_the_future" in str(refused.value)
