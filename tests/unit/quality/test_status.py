"""Pure parts of the validation state: object-set changes, baselines, acceptance, threshold bands."""

from __future__ import annotations

import pytest

from feedloop.config import QualitySettings, QualityThresholds, TenantThresholds
from feedloop.quality.runner import _ctr_band, _volume_band
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


def test_volume_band_is_the_trailing_mean_plus_minus_the_band():
    th = QualityThresholds(volume_band=0.5, volume_min_rows=10)
    base = [{"rows": {"acme": n}} for n in (100, 200, 300)]
    assert _volume_band("acme", th, base, 3, 22) == {"rows_min": 100, "rows_max": 301}
    assert _volume_band("acme", th, base[:2], 3, 22)["rows_min"] == Unset(
        "baseline has 2 validated day(s) of hour 22, needs 3")
    assert _volume_band("nobody", th, base, 3, 22)["rows_max"] == Unset("baseline mean 0 rows < volume_min_rows 10")


def test_ctr_band_pools_the_baseline_and_needs_enough_impressions():
    th = QualityThresholds(ctr_band=0.5, ctr_min_impressions=100)
    base = [{"impressions": {"acme/feed": 100}, "clicks": {"acme/feed": c}} for c in (5, 10, 15)]
    now = {"impressions": {"acme/feed": 120}}
    assert _ctr_band("acme", "feed", th, base, 3, 22, now) == {"ctr_min": 0.05, "ctr_max": 0.15}
    low = _ctr_band("acme", "feed", th, base, 3, 22, {"impressions": {"acme/feed": 99}})
    assert low["ctr_min"] == Unset("99 impressions this hour < ctr_min_impressions 100")


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
