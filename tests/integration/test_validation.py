"""Validation of hour partitions against the real embedded S3: every check has a fixture that breaks it;
blocking checks quarantine the hour, warning checks only record it; the training window's policy.

Each test validates in its own bucket; the trailing baseline (3 good days) is validated once
and its day summaries are copied in, because summaries are all the baseline reads.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from feedloop import quality
from feedloop.core.config import TenantThresholds
from feedloop.core.layout import HourPartition
from feedloop.quality import runner, status
from tests.support import lakedata

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 5)
HOURS = (22, 23)
BASELINE_DAYS = [DAY - timedelta(days=k) for k in (3, 2, 1)]


def _settings(embedded, bucket: str, *, dataset: dict | None = None, **tenants):
    quality_settings = embedded.quality.model_copy(update={
        "thresholds": embedded.quality.thresholds.model_copy(update={"ctr_min_impressions": 20, "volume_min_rows": 10}),
        "tenants": {t: TenantThresholds(**v) for t, v in tenants.items()},
    })
    return embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": bucket}),
        "quality": quality_settings,
        "events": embedded.events.model_copy(update={"tenants": lakedata.TENANTS}),
        "dataset": embedded.dataset.model_copy(update=dataset or {}),
    })


@pytest.fixture(scope="module")
def baseline(embedded) -> str:
    """A bucket holding three good, validated days before DAY."""
    from feedloop.core.storage import ObjectStore

    bucket = f"qbase-{uuid.uuid4().hex[:8]}"
    settings = _settings(embedded, bucket)
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket(bucket)
    for day in BASELINE_DAYS:
        lakedata.write_good_day(store, bucket, day, HOURS)
        assert quality.validate_day(settings, day).ok
    return bucket


@pytest.fixture
def lake(embedded, store, baseline):
    """A fresh bucket with the baseline summaries; returns (settings, store)."""
    bucket = f"q-{uuid.uuid4().hex[:10]}"
    store.ensure_bucket(bucket)
    for day in BASELINE_DAYS:
        store.put_json(bucket, status.summary_key(day), store.get_json(baseline, status.summary_key(day)))
    return _settings(embedded, bucket), store


def _window(day: date = DAY) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def test_a_good_day_passes_and_records_reports(lake):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, HOURS)
    result = quality.validate_day(settings, DAY, run_id="t-good")
    assert result.ok
    hour = result.summary["hours"]["22"]
    assert hour["state"] == "passed" and hour["failures"] == []
    assert not any(s["check"] in ("volume", "ctr_drift") for s in hour["skipped"]), hour["skipped"]
    assert result.report_uri == f"s3://{bucket}/validation/dt=2026-11-05/index.html"
    assert b"Engagement validation" in store.get(bucket, "validation/dt=2026-11-05/index.html").body
    docs = store.get(bucket, "validation/dt=2026-11-05/hour=22/rows.html").body
    assert b"engagement_hour" in docs and b"values must be greater than or equal to" in docs
    assert store.get_json(bucket, "validation/dt=2026-11-05/hour=22/rows.json")["success"] is True
    assert store.get(bucket, status.quarantine_key(HourPartition(DAY, 22))) is None
    window = quality.training_window(settings, *_window(), run_id="t")
    assert window.clean == [HourPartition(DAY, 22), HourPartition(DAY, 23)] and window.excluded == {}


def _table(evs):
    return lakedata.lake_table(evs)


def _set(evs, index, **fields):
    evs[index] = {**evs[index], **fields}
    return evs


def _impressions_lost(evs):
    """acme's impressions never arrived: all its clicks and dwells refer to nothing."""
    return [e for e in evs if not (e["tenant_id"] == "acme" and e["event_type"] == "impression")]


def _fewer_clicks(evs):
    """acme keeps 1 click of 3 per surface: CTR 0.02 against 0.06 on every baseline day."""
    return [e for e in evs if not (e["tenant_id"] == "acme" and e["event_type"] == "click"
                                   and not e["request_id"].endswith("-0"))]


def _drop_column(table: pa.Table) -> pa.Table:
    return table.drop_columns(["device"])


def _position_as_int64(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("position")
    return table.set_column(i, pa.field("position", pa.int64()), table["position"].cast(pa.int64()))


def _null_user(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("user_id")
    users = pc.if_else(pa.array([k == 3 for k in range(table.num_rows)]), None, table["user_id"])
    return table.set_column(i, pa.field("user_id", pa.string()), users)


def _unknown_tenant(evs):
    hooli = lakedata.hour_events(DAY, 22, tenants=("hooli",), surfaces=("feed",))
    return evs + hooli  # 56 of ~730 rows (7.7 %) > max_unknown_tenant_share 1 %


# (id, change to the events, change to the Arrow table, the blocking check that must fail)
BROKEN = [
    pytest.param(None, _drop_column, "columns", id="a-column-is-missing"),
    pytest.param(None, _position_as_int64, "types", id="position-written-as-int64"),
    pytest.param(None, _null_user, "ids_not_null", id="a-null-user-id"),
    pytest.param(lambda e: _set(e, 0, event_type="purchase"), None, "event_type_allowed", id="unknown-event-type"),
    pytest.param(lambda e: _set(e, 0, surface="homepage"), None, "surface_allowed", id="unknown-surface"),
    pytest.param(lambda e: [{**x, "position": 1} if x["position"] > 1 else x for x in e] + [{**e[0], "position": 0, "event_id": "zero"}],
                 None, "position_range", id="position-zero-from-a-client-bug"),
    pytest.param(lambda e: _set(e, 0, position=201), None, "position_range", id="position-above-max"),
    pytest.param(lambda e: [{**x, "position": 1} for x in e], None, "position_spread", id="positions-all-1"),
    pytest.param(lambda e: [{**x, "dwell_ms": 5_000_000} if x["event_type"] == "dwell" else x for x in e],
                 None, "dwell_range", id="dwell-above-bound"),
    pytest.param(lambda e: _set(e, 0, dwell_ms=-1), None, "dwell_range", id="negative-dwell"),
    pytest.param(lambda e: _set(e, 0, event_ts="2026-11-05T21:59:59.000Z"), None, "event_ts_in_window",
                 id="event-from-another-hour"),
    pytest.param(lambda e: e + e[: len(e) // 2], None, "event_id_unique", id="half-the-event-ids-duplicated"),
    pytest.param(_impressions_lost, None, "outcomes_have_impression", id="outcomes-without-impressions"),
    pytest.param(lambda e: [x for x in e if not (x["tenant_id"] == "acme" and x["event_type"] == "click")], None,
                 "ctr_not_zero", id="tenant-stops-sending-clicks"),
]

# (id, change to the events, the warning check): unusual but valid, the hour stays trainable
UNUSUAL = [
    pytest.param(lambda e: [x for x in e if x["tenant_id"] != "globex" or x["surface"] == "feed"], "volume",
                 id="tenant-sends-half-its-traffic"),
    pytest.param(lambda e: e + lakedata.hour_events(DAY, 22, tenants=("acme",), tag="b"), "volume",
                 id="tenant-volume-doubles"),
    pytest.param(_fewer_clicks, "ctr_drift", id="tenant-click-rate-drops-by-two-thirds"),
    pytest.param(_unknown_tenant, "unknown_tenant_share", id="unknown-tenant-traffic"),
]


def test_every_check_in_the_suites_has_a_fixture_that_breaks_it():
    from feedloop.core.config import repo_root
    from feedloop.quality.suites import METRICS_SUITE, ROWS_SUITE, load_template

    suites = repo_root() / "include" / "expectations"
    checks = {e["meta"]["check"] for name in (ROWS_SUITE, METRICS_SUITE) for e in load_template(suites, name)["expectations"]}
    assert checks == {p.values[2] for p in BROKEN} | {p.values[1] for p in UNUSUAL} | {"freshness"}  # freshness:
    # test_a_stale_day_warns_freshness


@pytest.mark.parametrize(("change_events", "change_table", "check"), BROKEN)
def test_each_broken_hour_is_caught_and_quarantined(lake, change_events, change_table, check):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, (23,))
    evs = lakedata.hour_events(DAY, 22)
    table = _table(change_events(evs) if change_events else evs)
    lakedata.write(store, bucket, HourPartition(DAY, 22), change_table(table) if change_table else table)

    with pytest.raises(quality.ValidationFailed) as failed:
        quality.validate_day(settings, DAY, run_id="t-broken")

    summary = failed.value.result.summary
    assert {f["check"] for f in summary["hours"]["22"]["failures"]} >= {check}, summary["hours"]["22"]["failures"]
    assert summary["hours"]["23"]["state"] == "passed"
    assert f"dt=2026-11-05/hour=22 {check}" in str(failed.value)
    marker = store.get_json(bucket, status.quarantine_key(HourPartition(DAY, 22)))
    assert marker and check in {f["check"] for f in marker["failures"]}
    with pytest.raises(quality.WindowNotReady, match=r"only 1 of 2 hours with data are clean(.|\n)*"
                                                     r"dt=2026-11-05/hour=22: quarantined"):
        quality.training_window(settings, *_window(), run_id="t")


@pytest.mark.parametrize(("change_events", "check"), UNUSUAL)
def test_each_unusual_hour_warns_and_still_trains(lake, change_events, check):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, (23,))
    lakedata.write(store, bucket, HourPartition(DAY, 22), _table(change_events(lakedata.hour_events(DAY, 22))))

    result = quality.validate_day(settings, DAY, run_id="t-unusual")

    hour = result.summary["hours"]["22"]
    assert hour["state"] == "warned" and hour["failures"] == []
    assert check in {f["check"] for f in hour["warnings"]} and {f["severity"] for f in hour["warnings"]} == {"warn"}
    assert result.summary["verdict"] == "warned" and result.warned_hours == [22]
    assert store.get(bucket, status.quarantine_key(HourPartition(DAY, 22))) is None
    assert b"warnings" in store.get(bucket, "validation/dt=2026-11-05/index.html").body
    assert quality.training_window(settings, *_window(), run_id="t").clean == [HourPartition(DAY, 22),
                                                                                 HourPartition(DAY, 23)]


def test_severity_overrides_turn_a_warning_into_a_block_and_back(lake, embedded):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, (23,))
    lakedata.write(store, bucket, HourPartition(DAY, 22), _table(_fewer_clicks(lakedata.hour_events(DAY, 22))))
    strict = settings.model_copy(update={"quality": settings.quality.model_copy(update={
        "severity": {"ctr_drift": "block"}, "tenants": {"acme": TenantThresholds(severity={"ctr_drift": "warn"})}})})
    assert quality.validate_day(strict, DAY).summary["hours"]["22"]["state"] == "warned"  # acme's own override
    strict = strict.model_copy(update={"quality": strict.quality.model_copy(update={"tenants": {}})})
    with pytest.raises(quality.ValidationFailed, match="hour=22 ctr_drift"):
        quality.validate_day(strict, DAY)


def test_real_traffic_noise_does_not_block(lake):
    """A producer retry duplicates an id, a late impression leaves its click an orphan for now: not broken."""
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, (23,))
    evs = lakedata.hour_events(DAY, 22) * 2  # two hours' worth, so one duplicate is under max_duplicate_share
    evs = [{**e, "event_id": f"{e['event_id']}-{k}"} for k, e in enumerate(evs)]
    late_impression = next(k for k, e in enumerate(evs) if e["event_type"] == "click") - 1
    evs = evs[:late_impression] + evs[late_impression + 1:] + [evs[0]]
    lakedata.write(store, bucket, HourPartition(DAY, 22), _table(evs))
    hour = quality.validate_day(settings, DAY).summary["hours"]["22"]
    assert hour["failures"] == [] and hour["state"] == "warned", hour  # twice the usual volume: a warning


def test_the_window_policy_excludes_or_refuses_quarantined_hours(lake, embedded):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    lakedata.write_good_day(store, bucket, DAY, (23,))
    lakedata.write(store, bucket, HourPartition(DAY, 22), _table([{**x, "position": 1} for x in lakedata.hour_events(DAY, 22)]))
    with pytest.raises(quality.ValidationFailed):
        quality.validate_day(settings, DAY)

    lenient = _settings(embedded, bucket, dataset={"min_clean_share": 0.5})
    window = quality.training_window(lenient, *_window(), run_id="t")
    assert window.clean == [HourPartition(DAY, 23)] and window.clean_share == 0.5
    assert list(window.excluded) == ["dt=2026-11-05/hour=22"]
    assert window.excluded["dt=2026-11-05/hour=22"].startswith("quarantined (position_spread)")
    refuse = _settings(embedded, bucket, dataset={"on_quarantined": "refuse", "min_clean_share": 0.5})
    with pytest.raises(quality.WindowNotReady, match=r"\(dataset.on_quarantined: refuse\)(.|\n)*hour=22: quarantined"):
        quality.training_window(refuse, *_window(), run_id="t")


def test_a_late_event_is_validated_again_by_the_window_and_trained_on(lake):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    hour22 = HourPartition(DAY, 22)
    lakedata.write_good_day(store, bucket, DAY, HOURS)
    assert quality.validate_day(settings, DAY).summary["hours"]["22"]["state"] == "passed"
    late = lakedata.hour_events(DAY, 22, tenants=("acme",), surfaces=("feed",), tag="late")[:5]
    lakedata.write(store, bucket, hour22, lakedata.lake_table(late, partition=1), partition=1)

    window = quality.training_window(settings, *_window(), run_id="t-late")

    assert window.clean == [hour22, HourPartition(DAY, 23)] and window.revalidated == {"dt=2026-11-05/hour=22": "passed"}
    again = store.get_json(bucket, status.status_key(hour22))
    assert again["objects"] == {k: v for k, v in again["objects"].items()} and len(again["objects"]) == 2
    assert again["revalidation"]["previous_state"] == "passed"
    assert again["revalidation"]["objects_state"] == runner.PASSED_WITH_HOUR
    assert again["revalidation"]["changed"] == "new: engagement+1+00000000000000000000.parquet"
    assert again["revalidation"]["run_id"] == "t-late"
    summary = store.get_json(bucket, status.summary_key(DAY))
    assert summary["hours"]["22"]["revalidation"]["run_id"] == "t-late" and summary["hours"]["23"]["state"] == "passed"

    # a broken late object: the objects alone fail, the hour is quarantined and left out
    bad = lakedata.hour_events(DAY, 22, tenants=("acme",), surfaces=("feed",), tag="late2")[:5]
    lakedata.write(store, bucket, hour22, lakedata.lake_table(_set(bad, 0, event_ts="2026-11-05T20:00:00.000Z"),
                                                              partition=2), partition=2)
    with pytest.raises(quality.WindowNotReady, match="hour=22: quarantined \\(event_ts_in_window\\)"):
        quality.training_window(settings, *_window(), run_id="t-late2")
    again = store.get_json(bucket, status.status_key(hour22))
    assert again["state"] == "failed" and again["revalidation"]["objects_state"] == "failed"


def test_a_stale_day_warns_freshness(lake):
    settings, store = lake
    lakedata.write_good_day(store, settings.s3.lake_bucket, DAY, (10, 11))
    result = quality.validate_day(settings, DAY)
    assert [(f["check"], f["expectation"]) for f in result.summary["hours"]["11"]["warnings"]] == [
        ("freshness", "expect_column_max_to_be_between(event_ts)")]


def test_a_day_without_partitions_fails(lake):
    settings, _ = lake
    with pytest.raises(quality.ValidationFailed, match="no objects under events/engagement/dt=2026-11-05/"):
        quality.validate_day(settings, DAY)
    with pytest.raises(quality.WindowNotReady, match="dt=2026-11-05: no partitions in the lake"):
        quality.training_window(settings, *_window(), run_id="t")


def test_per_tenant_override_applies_to_that_tenant_only(lake, embedded):
    settings, store = lake
    settings = _settings(embedded, settings.s3.lake_bucket, globex={"max_position": 4})
    lakedata.write_good_day(store, settings.s3.lake_bucket, DAY, HOURS)
    with pytest.raises(quality.ValidationFailed) as failed:
        quality.validate_day(settings, DAY)
    failures = failed.value.result.summary["hours"]["22"]["failures"]
    assert [(f["check"], f["scope"]) for f in failures] == [("position_range", "tenant=globex")]
    assert "max_value=4" in failures[0]["expected"]
    assert failures[0]["observed"] == "40 of 224 rows unexpected (17.86%), e.g. [5, 5, 5, 5, 5]"


def test_force_accept_and_revalidation_clear_the_quarantine(lake):
    settings, store = lake
    bucket = settings.s3.lake_bucket
    hour22 = HourPartition(DAY, 22)
    lakedata.write_good_day(store, bucket, DAY, (23,))
    bad = lakedata.hour_events(DAY, 22)
    key = lakedata.write(store, bucket, hour22, _table(_set(bad, 0, position=0)))
    with pytest.raises(quality.ValidationFailed):
        quality.validate_day(settings, DAY)

    accept = quality.Acceptance(hours=(22,), reason="client bug INC-42, rows harmless", by="oncall")
    result = quality.validate_day(settings, DAY, acceptance=accept)
    assert result.summary["hours"]["22"]["state"] == "accepted"
    assert result.summary["hours"]["22"]["accepted"]["reason"] == "client bug INC-42, rows harmless"
    assert store.get(bucket, status.quarantine_key(hour22)) is None
    assert quality.training_window(settings, *_window(), run_id="t").clean == [hour22, HourPartition(DAY, 23)]
    assert quality.validate_day(settings, DAY).summary["hours"]["22"]["state"] == "accepted", "same objects stay accepted"

    # a late event adds an object: the acceptance covered other objects, so the window's own
    # re-validation finds the old bad row again and quarantines the hour (the late rows alone pass)
    late = lakedata.hour_events(DAY, 22, tenants=("acme",), surfaces=("feed",), tag="late")[:5]
    lakedata.write(store, bucket, hour22, lakedata.lake_table(late, partition=1), partition=1)
    with pytest.raises(quality.WindowNotReady, match=r"hour=22: quarantined \(position_range\)"):
        quality.training_window(settings, *_window(), run_id="t")
    assert store.get_json(bucket, status.status_key(hour22))["revalidation"]["objects_state"] == "passed"

    # a replay rewrites the bad object with good data; re-validation passes and clears everything
    store.delete(bucket, lakedata.write(store, bucket, hour22, lakedata.lake_table(late, partition=1), partition=1))
    lakedata.write(store, bucket, hour22, _table(lakedata.hour_events(DAY, 22)))
    assert key.endswith("engagement+0+00000000000000000000.parquet")
    assert quality.validate_day(settings, DAY).summary["hours"]["22"]["state"] == "passed"
    assert store.get(bucket, status.quarantine_key(hour22)) is None
    assert quality.training_window(settings, *_window(), run_id="t").clean == [hour22, HourPartition(DAY, 23)]


def test_accepting_needs_a_reason():
    with pytest.raises(ValueError, match="needs a reason"):
        quality.Acceptance(hours=(3,), reason=" ", by="x")


def test_simulated_traffic_passes_with_the_default_thresholds(embedded, store):
    """The simulator's days (late events, exploration, outcomes seconds after impressions) quarantine
    nothing with the shipped thresholds; at this small volume the noisy checks say they were skipped,
    and why. (Bursty traffic: tests/integration/test_bursty_traffic.py.)"""
    from feedloop.contract import events
    from feedloop.ops import simulate

    bucket = f"qsim-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={"s3": embedded.s3.model_copy(update={"lake_bucket": bucket})})
    start = date(2026, 11, 1)
    sim = simulate.Simulator(settings, start=start, days=4, events_per_day=12_000, seed=3)
    decoded = events.decode_batch([r.value for r in sim.records(simulate.SimulationReport(start, 4))])
    assert not decoded.rejected
    table = lakedata.with_kafka_columns(decoded.table)
    hours = pc.strftime(table["event_ts"], format="%Y-%m-%dT%H")
    for label in pc.unique(hours).to_pylist():
        part = HourPartition(date.fromisoformat(label[:10]), int(label[11:]))
        lakedata.write(store, bucket, part, table.filter(pc.equal(hours, label)))

    for k in range(4):
        result = quality.validate_day(settings, start + timedelta(days=k), run_id=f"sim-{k}")
        assert result.ok and result.quarantined_hours == [], result.summary
    reasons = {s["reason"] for h in result.summary["hours"].values() for s in h["skipped"]}
    floors = ("volume_min_rows 1000", "ctr_min_impressions 200", "min_position_impressions 100", "needs 3")
    assert [r for r in reasons if not any(f in r for f in floors)] == []
