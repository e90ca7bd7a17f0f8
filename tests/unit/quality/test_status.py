"""Pure parts of the validation state: object-set changes, baselines, acceptance, robust bands, severities."""

from __future__ import annotations

import pytest

from feedloop.core.config import QualitySettings, QualityThresholds, TenantThresholds
from feedloop.quality.baselines import ctr_band, log_band, robust_band, volume_band
from feedloop.quality.status import Acceptance, describe_change, hour_baseline
from feedloop.quality.suites import Unset

K = "events/engagement/dt=2026-11-05/hour=22/engagement+{}+00000000000000000000.parquet"


@pytest.mark.parametrize(("current", "expected"), [
    pytest.param({K.format(0): "e1"}, "", id="same-objects"),
    pytest.param({K.format(0): "e1", K.format(1): "e9"}, "new: engagement+1+00000000000000000000.parquet",
                 id="late-event-adds-an-object"),
    pytest.param({K.format(0): "e2"}, "rewritten: engagement+0+00000000000000000000.parquet", id="replay-rewrites"),
    pytest.param({}, "gone: engagement+0+00000000000000000000.parquet", id="object-deleted"),
])
def test_describe_change(current, expected):
    assert describe_change({K.format(0): "e1"}, current) == expected


def test_baseline_uses_only_trainable_hours():
    metrics = {"rows": {"acme": 10}, "impressions": {}, "clicks": {}}
    summaries = [
        {"hours": {"22": {"state": "passed", "metrics": metrics}}},
        {"hours": {"22": {"state": "failed", "metrics": metrics}}},
        {"hours": {"22": {"state": "accepted", "metrics": metrics}, "23": {"state": "passed", "metrics": metrics}}},
        {"hours": {}},
    ]
    assert hour_baseline(summaries, 22) == [metrics, metrics]


def test_robust_band_ignores_one_odd_day():
    steady = [100, 104, 96, 101, 99, 103, 97]
    low, high, mid = robust_band(steady + [5000], k=4, min_rel=0.1)
    assert mid == pytest.approx(100.5)
    assert 80 < low and high < 125  # a mean +- band would be dragged to ~720


def test_robust_band_never_narrower_than_the_relative_floor():
    assert robust_band([100, 100, 100], k=4, min_rel=0.5) == (50, 150, 100)


def test_log_band_widens_with_heavy_tails():
    quiet, busy = log_band([100] * 5, k=4, min_rel=0.5), log_band([30, 100, 300, 90, 1000], k=4, min_rel=0.5)
    assert quiet[0] == pytest.approx(66.33, abs=0.01) and quiet[1] == pytest.approx(150.5, abs=0.01)
    assert busy[0] < 10 and busy[1] > 1500


def test_volume_band_is_judged_against_the_same_hour_history():
    th = QualityThresholds(volume_band=0.5, volume_min_rows=10, volume_mad_k=4)
    night = [{"rows": {"acme": n}} for n in (100, 110, 90)]
    evening = [{"rows": {"acme": n}} for n in (3000, 3300, 2700)]
    n, e = volume_band("acme", th, night, 3, 3), volume_band("acme", th, evening, 3, 20)
    assert n["rows_max"] < 200 < e["rows_min"]
    assert volume_band("acme", th, night[:2], 3, 22)["rows_min"] == Unset(
        "baseline has 2 validated day(s) of hour 22, needs 3")
    assert volume_band("nobody", th, night, 3, 22)["rows_max"] == Unset("baseline median 0 rows < volume_min_rows 10")


def test_ctr_band_from_the_median_day_and_needs_enough_impressions():
    th = QualityThresholds(ctr_band=0.5, ctr_min_impressions=100, ctr_mad_k=4)
    base = [{"impressions": {"acme/feed": 100}, "clicks": {"acme/feed": c}} for c in (5, 10, 15)]
    now = {"impressions": {"acme/feed": 120}}
    band = ctr_band("acme", "feed", th, base, 3, 22, now)
    assert band["ctr_min"] == 0.0 and band["ctr_max"] == pytest.approx(0.1 + 4 * 1.4826 * 0.05)
    low = ctr_band("acme", "feed", th, base, 3, 22, {"impressions": {"acme/feed": 99}})
    assert low["ctr_min"] == Unset("99 impressions this hour < ctr_min_impressions 100")
    thin = [{"impressions": {"acme/feed": 50}, "clicks": {"acme/feed": 5}}] + base[:2]
    assert isinstance(ctr_band("acme", "feed", th, thin, 3, 22, now)["ctr_min"], Unset)


def test_severity_tenant_over_deployment_over_suite():
    q = QualitySettings(severity={"volume": "block"}, tenants={"globex": TenantThresholds(severity={"volume": "warn"})})
    assert q.severity_of("volume", "acme", "warn") == "block"
    assert q.severity_of("volume", "globex", "warn") == "warn"
    assert q.severity_of("ctr_drift", "globex", "warn") == "warn"
    assert q.severity_of("columns", None, "block") == "block"
    assert q.for_tenant("globex") == q.thresholds  # a severity-only override changes no threshold


def test_tenant_overrides_fall_back_to_the_defaults():
    q = QualitySettings(tenants={"globex": TenantThresholds(max_position=500)})
    assert q.for_tenant("globex").max_position == 500
    assert q.for_tenant("globex").max_dwell_ms == q.thresholds.max_dwell_ms
    assert q.for_tenant("acme") == q.thresholds


@pytest.mark.parametrize(("hours", "reason", "error"), [
    pytest.param((3,), "", "needs a reason", id="no-reason"),
    pytest.param((24,), "ok", "hours 0..23", id="hour-out-of-range"),
])
def test_acceptance_is_checked(hours, reason, error):
    with pytest.raises(ValueError, match=error):
        Acceptance(hours=hours, reason=reason, by="op")
