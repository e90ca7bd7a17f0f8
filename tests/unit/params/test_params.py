"""feedloop.airflow.params.check: each param against its schema, unknown names, and the cross-field rules."""

from __future__ import annotations

import pytest

from feedloop.airflow import params
from feedloop.core.config import Settings

SETTINGS = Settings()  # defaults: floor ndcg@10 0.2, tolerance 0.025, 4 Kafka partitions


def problems(dag_id: str, values: dict) -> dict[str, str]:
    with pytest.raises(params.ParamError) as exc:
        params.check(dag_id, values, SETTINGS)
    return dict(exc.value.problems)


# What an operator must type for a manual-only DAG; the scheduled retrain_ranker must run on its defaults.
REQUIRED = {"retrain_ranker": {}, "rollback_ranker": {"reason": "bad model"}, "canary_ranker": {"reason": "looks good"},
            "replay_engagement": {"start": "2026-11-20T05:00:00Z", "end": "2026-11-20T07:00:00Z"}}


@pytest.mark.parametrize("dag_id", sorted(params.SPECS))
def test_the_defaults_pass_with_only_the_required_values(dag_id):
    defaults = {name: p.value for name, p in params.SPECS[dag_id].definitions(SETTINGS).items()}
    if REQUIRED[dag_id]:
        assert set(problems(dag_id, {})) == set(REQUIRED[dag_id])
    assert params.check(dag_id, {**defaults, **REQUIRED[dag_id]}, SETTINGS) == {**defaults, **REQUIRED[dag_id]}


@pytest.mark.parametrize("values, named", [
    pytest.param({"promotion_mode": "force"}, "force_reason", id="force-needs-a-reason"),
    pytest.param({"promotion_mode": "force", "force_reason": "  "}, "force_reason", id="blank-reason-is-no-reason"),
    pytest.param({"force_reason": "hotfix"}, "force_reason", id="reason-without-force"),
    pytest.param({"promotion_mode": "dry-run", "force_reason": "hotfix"}, "force_reason", id="reason-with-dry-run"),
    pytest.param({"accept_hours": [3, 4]}, "accept_reason", id="accepted-hours-need-a-reason"),
    pytest.param({"accept_reason": "known outage"}, "accept_reason", id="reason-without-hours"),
    pytest.param({"min_auc": 0.6, "gate_thresholds": {"floors": {"auc": 0.5}}}, "gate_thresholds",
                 id="floor-given-twice"),
    pytest.param({"max_regression": 0.1, "gate_thresholds": {"tolerance": 0.2}}, "gate_thresholds",
                 id="tolerance-given-twice"),
    pytest.param({"gate_thresholds": {"floorz": {"auc": 0.5}}}, "gate_thresholds", id="misspelt-gate-key"),
    pytest.param({"gate_thresholds": {"floors": {"auroc": 0.5}}}, "gate_thresholds", id="unknown-metric"),
    pytest.param({"window_day": 7}, "window_day", id="unknown-param"),
    pytest.param({"window_days": 2}, "window_days", id="window-below-min-window-days"),
    pytest.param({"window_days": 91}, "window_days", id="window-above-90"),
    pytest.param({"min_auc": 1.2}, "min_auc", id="floor-above-1"),
    pytest.param({"min_ndcg_at_10": -0.1}, "min_ndcg_at_10", id="floor-below-0"),
    pytest.param({"promotion_mode": "yolo"}, "promotion_mode", id="mode-not-in-enum"),
    pytest.param({"accept_hours": [24], "accept_reason": "x"}, "accept_hours", id="hour-24"),
    pytest.param({"accept_hours": [3, 3], "accept_reason": "x"}, "accept_hours", id="hour-twice"),
    pytest.param({"canary_percent": 101}, "canary_percent", id="canary-above-100"),
])
def test_retrain_refuses_naming_the_param(values, named):
    assert named in problems("retrain_ranker", values)


def test_every_problem_is_reported_at_once():
    found = problems("retrain_ranker", {"promotion_mode": "force", "accept_hours": [1], "window_day": 5})
    assert set(found) == {"force_reason", "accept_reason", "window_day"}
    assert "promotion_mode=force" in found["force_reason"]


def test_the_error_message_names_each_param():
    with pytest.raises(params.ParamError, match=r"param 'window_days': 1 is less than the minimum of 3"):
        params.check("retrain_ranker", {"window_days": 1}, SETTINGS)


@pytest.mark.parametrize("values, overrides", [
    pytest.param({}, None, id="nothing-overridden"),
    pytest.param({"min_auc": 0.7}, {"floors": {"auc": 0.7, "ndcg@10": 0.2}}, id="typed-floor-keeps-the-other"),
    pytest.param({"min_ndcg_at_10": 0.0, "max_regression": 1.0}, {"floors": {"auc": 0.52, "ndcg@10": 0.0},
                                                                   "tolerance": 1.0}, id="floor-and-tolerance"),
    pytest.param({"gate_thresholds": {"floors": {"auc": 0.0}}}, {"floors": {"auc": 0.0}}, id="object-replaces-floors"),
    pytest.param({"gate_thresholds": {"floors": {"auc": 0.0}}, "min_ndcg_at_10": 0.3},
                 {"floors": {"auc": 0.0, "ndcg@10": 0.3}}, id="object-floors-plus-a-typed-one"),
])
def test_gate_overrides_from_typed_params_and_the_object(values, overrides):
    checked = params.check("retrain_ranker", values, SETTINGS)
    assert params.gate_overrides(checked, SETTINGS) == overrides


def test_reasons_are_stripped():
    checked = params.check("retrain_ranker", {"promotion_mode": "force", "force_reason": "  hotfix  "}, SETTINGS)
    assert checked["force_reason"] == "hotfix"


@pytest.mark.parametrize("start, end, expected", [
    pytest.param("2026-11-20T05:00", "2026-11-20T07:00", ("2026-11-20T05:00:00Z", "2026-11-20T07:00:00Z"),
                 id="no-offset-means-utc"),
    pytest.param("2026-11-20T05:00:00Z", "2026-11-20 07:00:00+00:00",
                 ("2026-11-20T05:00:00Z", "2026-11-20T07:00:00Z"), id="z-and-utc-offset"),
])
def test_replay_times_are_utc_whatever_the_machine(start, end, expected, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        checked = params.check("replay_engagement", {"start": start, "end": end}, SETTINGS)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert (checked["start"], checked["end"]) == expected


@pytest.mark.parametrize("values, named", [
    pytest.param({"start": "2026-11-20T05:00+02:00", "end": "2026-11-20T07:00"}, "start", id="non-utc-offset"),
    pytest.param({"start": "20/11/2026 05:00", "end": "2026-11-20T07:00"}, "start", id="not-iso"),
    pytest.param({"start": "2026-11-20T05:00"}, "end", id="time-needs-end"),
    pytest.param({"start": "2026-11-20T07:00", "end": "2026-11-20T07:00"}, "end", id="empty-range"),
    pytest.param({"start": "2026-11-20T05:00", "end": "2026-11-20T07:00", "partition": 1}, "partition",
                 id="offset-param-in-time-mode"),
    pytest.param({"mode": "offsets", "partition": 0, "start_offset": 10}, "end_offset", id="offsets-need-end"),
    pytest.param({"mode": "offsets", "partition": 0, "start_offset": 10, "end_offset": 10}, "end_offset",
                 id="empty-offset-range"),
    pytest.param({"mode": "offsets", "partition": 4, "start_offset": 0, "end_offset": 10}, "partition",
                 id="partition-beyond-the-topic"),
    pytest.param({"mode": "offsets", "partition": 0, "start_offset": 0, "end_offset": 10,
                  "start": "2026-11-20T05:00"}, "start", id="time-param-in-offsets-mode"),
])
def test_replay_refuses_naming_the_param(values, named):
    assert named in problems("replay_engagement", values)


def test_a_pattern_failure_says_the_expected_form_not_the_regex():
    found = problems("replay_engagement", {"start": "yesterday", "end": "2026-11-20T07:00"})
    assert "YYYY-MM-DDTHH:MM" in found["start"] and "[0-9]" not in found["start"]


@pytest.mark.parametrize("dag_id, values, named", [
    pytest.param("rollback_ranker", {"reason": "ok!", "to_version": "latest"}, "to_version", id="rollback-target"),
    pytest.param("rollback_ranker", {"reason": "no"}, "reason", id="rollback-reason-too-short"),
    pytest.param("rollback_ranker", {"reason": "      "}, "reason", id="rollback-reason-blank"),
    pytest.param("canary_ranker", {"reason": " \t  \n "}, "reason", id="canary-reason-blank"),
    pytest.param("rollback_ranker", {"reason": "bad\x00model"}, "reason", id="rollback-reason-control-character"),
    pytest.param("canary_ranker", {"reason": "fine", "action": "ramp"}, "action", id="canary-action"),
    pytest.param("canary_ranker", {"reason": "fine", "dry_run": "yes"}, "dry_run", id="canary-dry-run-bool"),
])
def test_rollback_and_canary_refuse_naming_the_param(dag_id, values, named):
    assert named in problems(dag_id, values)


def test_in_task_fails_the_task_at_once():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="retrain_ranker: invalid params, nothing was done: param "
                                                   "'force_reason'"):
        params.in_task("retrain_ranker", {"promotion_mode": "force"}, SETTINGS)


def test_every_param_is_typed_and_described():
    for dag_id, spec in params.SPECS.items():
        for name, p in spec.definitions(SETTINGS).items():
            assert p.schema.get("type"), f"{dag_id}.{name} has no type"
            assert len(p.description or "") > 20, f"{dag_id}.{name} has no real description"
            if "enum" in p.schema:  # a dropdown in the trigger form needs a plain (non-null) type
                assert p.schema["type"] == "string", f"{dag_id}.{name}"
            optional = p.value in ("", None) and not p.schema.get("minLength")
            if optional:  # the form requires a non-null type and blocks Trigger while the field is empty
                assert "null" in p.schema["type"], f"{dag_id}.{name} is optional but typed as required"
