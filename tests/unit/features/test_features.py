"""features.derive on hand-made inputs (exact values) and the manifest saved with every model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedloop.features import definitions as features
from feedloop.contract.events import DEVICES, SURFACES

TENANTS = ("acme", "globex", "initech")


def _inputs(**rows: list) -> dict[str, np.ndarray]:
    """Row 0: globex on search/web, request 2 h after the item's creation. Row 1: an unknown tenant, feed/ios,
    an item missing from the catalog. Every count is 0 unless given."""
    n = 2
    out = {c: np.zeros(n) for c in features.COUNT_COLUMNS}
    out["request_ts"] = np.array([1_700_007_200.0, 1_700_000_000.0])
    out["item_created_at"] = np.array([1_700_000_000.0, np.nan])
    out["tenant_id"] = np.array(["globex", "umbrella"], dtype=object)
    out["surface"] = np.array(["search", "feed"], dtype=object)
    out["device"] = np.array(["web", "ios"], dtype=object)
    out["user_item_content_cos"] = np.array([0.25, np.nan])
    out["recent_positive_content_sim"] = np.array([0.5, np.nan])
    for name, values in rows.items():
        out[name] = np.asarray(values, dtype=out[name].dtype)
    return out


def _row(matrix: np.ndarray, i: int) -> dict[str, float]:
    return dict(zip(features.FEATURE_NAMES, matrix[i].tolist()))


def test_derive_exact_values_counts_smoothed_rates_age_and_codes():
    x = _inputs(user_impr_7d=[80, 0], user_click_7d=[9, 0], user_impr_28d=[180, 3], user_click_28d=[19, 3],
                item_impr_1d=[30, 0], item_click_1d=[4, 0], item_impr_7d=[380, 0], item_click_7d=[39, 0],
                item_like_7d=[19, 0], item_share_7d=[0, 0], author_impr_7d=[1000, 0], author_click_7d=[499, 0],
                user_author_impr_28d=[5, 0], user_author_click_28d=[2, 0],
                user_topic_impr_28d=[20, 0], user_topic_click_28d=[19, 0])
    m = features.derive(x, features.categories(TENANTS))
    assert m.dtype == np.float32 and m.shape == (2, len(features.FEATURES))
    # smoothed rate = (events + 0.05 * 20) / (impressions + 20), i.e. (events + 1) / (impressions + 20)
    expected = {
        "user_impr_7d": 80, "user_ctr_7d": 10 / 100, "user_impr_28d": 180, "user_ctr_28d": 20 / 200,
        "item_impr_1d": 30, "item_ctr_1d": 5 / 50, "item_impr_7d": 380, "item_ctr_7d": 40 / 400,
        "item_like_rate_7d": 20 / 400, "item_share_rate_7d": 1 / 400,
        "author_impr_7d": 1000, "author_ctr_7d": 500 / 1020,
        "user_author_impr_28d": 5, "user_author_click_28d": 2, "user_author_ctr_28d": 3 / 25,
        "user_topic_impr_28d": 20, "user_topic_click_28d": 19, "user_topic_ctr_28d": 20 / 40,
        "item_age_hours": 2.0,                       # 7200 s between creation and request
        "tenant_id": 1.0, "surface": 1.0, "device": 2.0,   # globex, search, web
        "user_item_content_cos": 0.25, "recent_positive_content_sim": 0.5,   # computed by content_profile
    }
    assert set(expected) == set(features.FEATURE_NAMES)
    assert _row(m, 0) == {k: float(np.float32(v)) for k, v in expected.items()}


def test_derive_column_major_holds_the_same_values():
    """order="F" (the training set's) changes the layout only."""
    x = _inputs(user_impr_7d=[80, 0], user_click_7d=[9, 0], item_impr_7d=[380, 0], item_click_7d=[39, 0])
    rows, columns = features.derive(x, features.categories(TENANTS)), features.derive(
        x, features.categories(TENANTS), order="F")
    assert rows.flags.c_contiguous and columns.flags.f_contiguous
    np.testing.assert_array_equal(rows, columns)


def test_unknown_entity_gets_the_prior_unknown_tenant_and_item_are_nan():
    m = features.derive(_inputs(user_impr_28d=[0, 3], user_click_28d=[0, 3]), features.categories(TENANTS))
    row = _row(m, 1)
    rates = [f.name for f in features.FEATURES if f.default == features.CTR_PRIOR]
    assert {row[r] for r in rates if r != "user_ctr_28d"} == {float(np.float32(0.05))}
    assert row["user_ctr_28d"] == float(np.float32(4 / 23))
    assert math.isnan(row["tenant_id"])          # "umbrella" is not a configured tenant
    assert math.isnan(row["item_age_hours"])     # not in the catalog
    assert (row["surface"], row["device"]) == (0.0, 0.0)   # feed, ios


@pytest.mark.parametrize(("values", "levels", "expected"), [
    pytest.param(["b", "a", "c"], ["a", "b", "c"], [1.0, 0.0, 2.0], id="codes-follow-the-level-order"),
    pytest.param(["z", None, "a"], ["a"], [np.nan, np.nan, 0.0], id="unseen-and-null-are-nan"),
    pytest.param([], ["a"], [], id="empty"),
])
def test_encode(values, levels, expected):
    got = features.encode(np.array(values, dtype=object), levels)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))


def test_categories_are_the_contract_enums_and_the_configured_tenants():
    assert features.categories(["t1", "t2"]) == {"tenant_id": ["t1", "t2"], "surface": list(SURFACES),
                                                 "device": list(DEVICES)}


def test_manifest_structure():
    m = features.manifest(TENANTS, objective="lambdarank")
    assert {k: m[k] for k in ("objective", "label", "binary_label", "group")} == {
        "objective": "lambdarank", "label": "label", "binary_label": "label_binary", "group": "request_id"}
    assert [f["name"] for f in m["features"]] == list(features.FEATURE_NAMES)
    assert [f["column"] for f in m["features"]] == ["f_" + n for n in features.FEATURE_NAMES]
    # a NaN default (unknown content similarity) is written as null: JSON has no NaN
    assert all(f["dtype"] == "float32" and (f["default"] is None or math.isfinite(f["default"])) for f in m["features"])
    assert {f["name"]: f["categories"] for f in m["features"] if f["kind"] == "categorical"} == {
        "tenant_id": list(TENANTS), "surface": list(SURFACES), "device": list(DEVICES)}
    assert all("categories" not in f for f in m["features"] if f["kind"] == "numeric")
    assert {f["kind"] for f in m["features"]} == {"numeric", "categorical"}
    defaults = {f["name"]: f["default"] for f in m["features"]}
    assert defaults["user_ctr_7d"] == features.CTR_PRIOR and defaults["user_impr_7d"] == 0.0
    assert defaults["user_item_content_cos"] is None and defaults["recent_positive_content_sim"] is None
    assert m["content"] == {"events": ["click", "like", "share"], "window_days": 28, "half_life_days": 7.0,
                            "recent_k": 5}


def test_every_count_a_feature_reads_is_a_declared_snapshot_column():
    """derive reads only COUNT_COLUMNS + CONTEXT_COLUMNS + CONTENT_COLUMNS: what the snapshot and the request
    provide."""
    x = {c: np.zeros(1) for c in features.COUNT_COLUMNS + features.CONTENT_COLUMNS}
    x.update(request_ts=np.zeros(1), item_created_at=np.zeros(1), tenant_id=np.array(["acme"], dtype=object),
             surface=np.array(["feed"], dtype=object), device=np.array(["web"], dtype=object))
    assert set(x) == set(features.COUNT_COLUMNS) | set(features.CONTEXT_COLUMNS) | set(features.CONTENT_COLUMNS)
    features.derive(x, features.categories(TENANTS))   # no KeyError
    assert len(set(features.COUNT_COLUMNS)) == len(features.COUNT_COLUMNS)
    assert features.MAX_WINDOW == 28
