"""Any JSON for any param of any feedloop DAG: either the run's checked params, or a ParamError whose every problem
names a param of that DAG (or the unknown name given) and says what is wrong. Never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.airflow import params
from feedloop.core.config import Settings

SETTINGS = Settings()
SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=30)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                           max_size=4), max_leaves=12)
GATE_KEYS = st.sampled_from(sorted(params.PromotionSettings.model_fields))
METRICS = st.sampled_from(["auc", "ndcg@10", "ndcg@5", "map", "mrr", "auroc", ""])
# gate_thresholds shaped like the real thing, with any value in any place
GATE_LIKE = st.dictionaries(GATE_KEYS, JSON | st.dictionaries(METRICS, JSON, max_size=3), max_size=4)


def outcome(dag_id: str, values: dict) -> dict | params.ParamError:
    try:
        return params.check(dag_id, values, SETTINGS)
    except params.ParamError as exc:
        return exc


def assert_clear(dag_id: str, values: dict) -> None:
    found = outcome(dag_id, values)
    if isinstance(found, params.ParamError):
        known = set(params.SPECS[dag_id].definitions(SETTINGS)) | set(values)
        assert found.problems, "an error with no problem in it"
        for name, why in found.problems:
            assert name in known and why.strip(), (name, why)
            assert "Traceback" not in why
        assert str(found).startswith("param '")


# what an operator must type for a manual DAG, so that the cross-field rules run on the fuzzed value
REQUIRED = {"retrain_ranker": {}, "rollback_ranker": {"reason": "bad model"}, "canary_ranker": {"reason": "looks good"},
            "replay_engagement": {"start": "2026-11-20T05:00", "end": "2026-11-20T07:00"}}
UNIT = st.none() | st.floats(0, 1)


@pytest.mark.parametrize("dag_id", sorted(params.SPECS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_json_for_one_param_is_accepted_or_refused_naming_the_param(dag_id, data):
    name = data.draw(st.sampled_from(sorted(params.SPECS[dag_id].definitions(SETTINGS))), label="param")
    assert_clear(dag_id, {**REQUIRED[dag_id], name: data.draw(JSON, label="value")})


@pytest.mark.parametrize("dag_id", sorted(params.SPECS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_json_for_every_param_is_accepted_or_refused_naming_the_params(dag_id, data):
    names = sorted(params.SPECS[dag_id].definitions(SETTINGS))
    assert_clear(dag_id, data.draw(st.fixed_dictionaries({}, optional={n: JSON for n in [*names, "extra"]})))


@settings(max_examples=120, deadline=None)
@given(gate=GATE_LIKE, min_auc=UNIT, min_ndcg_at_10=UNIT, max_regression=UNIT)
def test_any_gate_thresholds_is_accepted_or_refused_naming_the_key(gate, min_auc, min_ndcg_at_10, max_regression):
    assert_clear("retrain_ranker", {"gate_thresholds": gate, "min_auc": min_auc, "min_ndcg_at_10": min_ndcg_at_10,
                                    "max_regression": max_regression})


@pytest.mark.parametrize("gate", [
    pytest.param({"floors": "abc"}, id="floors-a-string"),
    pytest.param({"floors": 5}, id="floors-a-number"),
    pytest.param({"floors": None}, id="floors-null"),
    pytest.param({"floors": [["auc", 0.5]]}, id="floors-a-list"),
    pytest.param({"floors": {"auc": "high"}}, id="a-floor-not-a-number"),
    pytest.param({"floors": {"auc": 5}}, id="a-floor-no-model-can-reach"),
    pytest.param({"floors": {"ndcg@10": -0.1}}, id="a-negative-floor"),
    pytest.param({"tolerance": {"a": 1}}, id="tolerance-an-object"),
    pytest.param({"compare": "ndcg@10"}, id="compare-a-string"),
])
def test_a_malformed_gate_thresholds_names_the_key_and_the_rule(gate):
    with pytest.raises(params.ParamError) as exc:
        params.check("retrain_ranker", {"gate_thresholds": gate}, SETTINGS)
    ((name, why),) = exc.value.problems
    key = next(iter(gate))
    assert name == "gate_thresholds" and why.startswith(key) and "include/config" in why, why
    with pytest.raises(params.ParamError):
        params.check("retrain_ranker", {"gate_thresholds": gate, "min_auc": 0.6}, SETTINGS)


@settings(max_examples=100, deadline=None)
@given(start=st.from_regex(params.UTC_PATTERN, fullmatch=True), end=st.from_regex(params.UTC_PATTERN, fullmatch=True))
def test_any_replay_range_in_the_expected_form_is_accepted_or_refused_naming_the_param(start, end):
    assert_clear("replay_engagement", {"start": start, "end": end})
