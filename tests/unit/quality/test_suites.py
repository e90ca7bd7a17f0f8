"""Instantiating the GX suite templates: scopes, per-tenant overrides, skipped parameters."""

from __future__ import annotations

from collections import Counter

import pytest

from feedloop.core.config import QualitySettings, TenantThresholds, repo_root
from feedloop.quality.suites import METRICS_SUITE, ROWS_SUITE, HourScope, Unset, build_suite, instantiate, load_template

SUITES = repo_root() / "include" / "expectations"
TENANTS = ("acme", "globex")
SURFACES = ("feed", "search")


def _params(tenant, surface):
    return {
        "lake_columns": ["a"], "event_types": ["impression"], "surfaces": list(SURFACES), "known_tenants": list(TENANTS),
        "known_tenant_mostly": 0.99, "window_start": "2026-11-05T22:00:00+00:00",
        "window_end": "2026-11-05T23:00:00+00:00", "freshness_min": "2026-11-05T21:00:00+00:00",
        "max_position": 500 if tenant == "globex" else 200, "max_dwell_ms": 1000, "max_orphan_outcomes": 0,
        "rows_min": 10 if tenant else Unset("no tenant"), "rows_max": 30 if tenant else Unset("no tenant"),
        "ctr_min": Unset("baseline has 1 validated day(s) of hour 22, needs 3"),
        "ctr_max": Unset("baseline has 1 validated day(s) of hour 22, needs 3"),
        "unique_event_id_mostly": 0.999, "max_first_position_share": 0.5, "ctr_ceiling": 1.0,
    }


def _scope(**kw) -> HourScope:
    return HourScope(**{"tenants": TENANTS, "overridden": (), "surfaces": SURFACES, "newest_hour": False,
                        "params": _params, "severity": QualitySettings().severity_of, **kw})


def test_templates_only_use_known_scopes_and_name_every_check():
    for name in (ROWS_SUITE, METRICS_SUITE):
        template = load_template(SUITES, name)
        assert all(e["meta"]["check"] for e in template["expectations"])


def test_without_overrides_each_threshold_check_runs_once_on_all_rows():
    ready, _ = instantiate(load_template(SUITES, ROWS_SUITE), _scope())
    position = [i for i in ready if i.check == "position_range"]
    assert len(position) == 1 and "row_condition" not in position[0].kwargs
    assert position[0].kwargs["max_value"] == 200


def test_a_tenant_override_gets_its_own_expectation_and_the_rest_keep_the_default():
    ready, _ = instantiate(load_template(SUITES, ROWS_SUITE), _scope(overridden=("globex",)))
    position = {i.scope: i.kwargs for i in ready if i.check == "position_range"}
    assert position[""]["row_condition"] == "tenant_id not in ['globex']" and position[""]["max_value"] == 200
    assert position["tenant=globex"]["row_condition"] == "tenant_id == 'globex'"
    assert position["tenant=globex"]["max_value"] == 500


def test_volume_runs_per_known_tenant_and_freshness_only_on_the_newest_hour():
    ready, _ = instantiate(load_template(SUITES, METRICS_SUITE), _scope())
    assert {i.kwargs["column"] for i in ready if i.check == "volume"} == {"rows@acme", "rows@globex"}
    assert Counter(i.check for i in instantiate(load_template(SUITES, ROWS_SUITE), _scope())[0])["freshness"] == 0
    newest, _ = instantiate(load_template(SUITES, ROWS_SUITE), _scope(newest_hour=True))
    assert Counter(i.check for i in newest)["freshness"] == 1


def test_metric_checks_read_their_tenant_or_pair_column_without_a_row_condition():
    ready, _ = instantiate(load_template(SUITES, METRICS_SUITE), _scope())
    columns = {(i.check, i.scope): i.kwargs["column"] for i in ready}
    assert columns[("ctr_not_zero", "tenant=globex surface=search")] == "ctr@globex/search"
    assert columns[("volume", "tenant=acme")] == "rows@acme"
    assert columns[("position_spread", "")] == "first_position_share"
    assert not any("row_condition" in i.kwargs for i in ready)


def test_a_per_tenant_override_scope_needs_row_conditions(tmp_path):
    (tmp_path / "x.json").write_text('{"scope_by": "column", "expectations": [{"type": "t", "kwargs": {}, '
                                     '"meta": {"check": "c", "scope": "tenant"}}]}')
    with pytest.raises(ValueError, match="c: scope 'tenant' needs scope_by row_condition"):
        load_template(tmp_path, "x")


def test_an_unset_parameter_skips_the_expectation_and_says_why():
    ready, skipped = instantiate(load_template(SUITES, METRICS_SUITE), _scope())
    assert [i.check for i in ready] == (["outcomes_have_impression"] + ["ctr_not_zero"] * 4 + ["position_spread"]
                                        + ["volume"] * 2)
    assert len(skipped) == len(TENANTS) * len(SURFACES)
    assert skipped[0].scope == "tenant=acme surface=feed"
    assert skipped[0].reason.startswith("baseline has 1 validated day(s) of hour 22, needs 3")


def test_the_built_gx_suite_carries_check_and_scope_in_meta():
    ready, _ = instantiate(load_template(SUITES, ROWS_SUITE), _scope(overridden=("globex",)))
    suite = build_suite(ROWS_SUITE, ready)
    assert len(suite.expectations) == len(ready)
    metas = {(e.meta["check"], e.meta["scope"]) for e in suite.expectations}
    assert ("position_range", "tenant=globex") in metas and ("event_id_unique", "") in metas


def test_an_unknown_scope_in_a_template_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text('{"expectations": [{"type": "t", "kwargs": {}, "meta": {"check": "c", "scope": "week"}}]}')
    with pytest.raises(ValueError, match="c has unknown scope 'week'"):
        load_template(tmp_path, "x")


def test_broken_data_blocks_and_unusual_data_warns_by_default():
    ready = [i for name in (ROWS_SUITE, METRICS_SUITE)
             for i in instantiate(load_template(SUITES, name), _scope(newest_hour=True))[0]]
    severity = {i.check: i.severity for i in ready}
    assert {c for c, s in severity.items() if s == "warn"} == {"volume", "unknown_tenant_share", "freshness"}
    assert severity["event_id_unique"] == severity["position_spread"] == severity["ctr_not_zero"] == "block"
    assert severity["outcomes_have_impression"] == severity["event_ts_in_window"] == "block"
    drift = load_template(SUITES, METRICS_SUITE)["expectations"]
    assert {e["meta"]["check"]: e["meta"]["severity"] for e in drift}["ctr_drift"] == "warn"


def test_severity_is_overridden_per_check_and_per_tenant():
    q = QualitySettings(severity={"position_range": "warn"},
                        tenants={"globex": TenantThresholds(severity={"volume": "block"})})
    ready = [i for name in (ROWS_SUITE, METRICS_SUITE)
             for i in instantiate(load_template(SUITES, name), _scope(overridden=("globex",), severity=q.severity_of))[0]]
    assert {(i.check, i.scope): i.severity for i in ready if i.check in ("position_range", "volume")} == {
        ("position_range", ""): "warn", ("position_range", "tenant=globex"): "warn",
        ("volume", "tenant=acme"): "warn", ("volume", "tenant=globex"): "block"}
    suite = build_suite(METRICS_SUITE, ready)
    assert {e.meta["severity"] for e in suite.expectations} == {"block", "warn"}


def test_an_unknown_severity_in_a_suite_is_refused(tmp_path):
    template = load_template(SUITES, ROWS_SUITE)
    template["expectations"][0]["meta"]["severity"] = "fatal"
    (tmp_path / "bad.json").write_text(__import__("json").dumps(template))
    with pytest.raises(ValueError, match="columns has severity 'fatal'; use one of block, warn"):
        load_template(tmp_path, "bad")
