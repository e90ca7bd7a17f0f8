"""Three weeks of bursty traffic through `retrain_ranker` with the default configuration.

The simulator's bursty mode (hour volumes from 0 to ~20x the median, click rates swinging up to
40 % day to day, 1 % of events arriving up to 48 h late) lands each day's ARRIVALS in the lake as
new objects of their event-time hours (late ones in hours already validated), then the real DAG
runs for that day (tests/support/bursty_driver.py: `DAG.test()`, as `airflow dags test` does, in
one process for the 21 days; the promotion steps after evaluate marked done). Five
kinds of broken hour are injected on five days, and on two days a tenant nobody configured shows up
(unusual but valid). Checked: every day with enough data trains and
evaluates with no manual step; each broken hour is quarantined, alerted with its failed check and
left out of the training set; warnings reach the Data quality view and at most one message a day;
late events are validated again by the next run and trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date, timedelta

import pytest

from feedloop.ops import stack
from feedloop.core.layout import HourPartition
from feedloop.quality import overview, runner, status
from tests.support import bursty_driver as driver
from tests.integration.test_validation_airflow import slack, smtp  # noqa: F401 - the receivers, by fixture name

pytestmark = [pytest.mark.integration, pytest.mark.airflow]
START, DAYS = driver.START, driver.DAYS


def _partition(label: str) -> HourPartition:
    return HourPartition(date.fromisoformat(label[3:13]), int(label[-2:]))


@pytest.fixture(scope="module")
def world(embedded, airflow_cli, slack, smtp, tmp_path_factory):  # noqa: F811 - the receivers, by fixture name
    """The 21 days, run once by tests/support/bursty_driver.py; (settings, store, result, posts per day)."""
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(embedded)
    bucket, models = f"burst-{uuid.uuid4().hex[:8]}", f"burstm-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    store.ensure_bucket(models)
    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": bucket, "models_bucket": models}),
        "retrain": embedded.retrain.model_copy(update={"start_date": START}),
    })
    env = {
        **os.environ, **stack.airflow_env(embedded), **stack.settings_env(embedded),
        "FEEDLOOP_S3__LAKE_BUCKET": bucket, "FEEDLOOP_S3__MODELS_BUCKET": models,
        "FEEDLOOP_RETRAIN__START_DATE": START.isoformat(),
        # validation and the window policy run with the defaults; a 7-day training window and 40 trees keep
        # the three weeks inside the test budget
        "FEEDLOOP_DATASET__WINDOW_DAYS": "7",
        "FEEDLOOP_TRAIN__NUM_BOOST_ROUND": "40", "FEEDLOOP_TRAIN__MIN_BOOST_ROUND": "10",
        "AIRFLOW_CONN_FEEDLOOP_SLACK": json.dumps({"conn_type": "slackwebhook", "password": "T1/B1/X1",
                                                   "host": f"http://127.0.0.1:{slack[0]}/hook"}),
        "AIRFLOW_CONN_FEEDLOOP_SMTP": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp[0],
                                                  "extra": {"disable_tls": True, "disable_ssl": True}}),
    }
    folder = tmp_path_factory.mktemp("bursty")
    out, log = folder / "result.json", folder / "driver.log"
    with log.open("w") as sink:
        done = subprocess.run([sys.executable, "-m", "tests.support.bursty_driver", str(out)], env=env,
                              stdout=sink, stderr=subprocess.STDOUT, timeout=2400)
    assert done.returncode == 0, log.read_text()[-8000:]
    result = json.loads(out.read_text())
    posts: dict[date, list[str]] = {}
    for _, body in slack[1]:
        text = body["text"]
        day = next(START + timedelta(days=d) for d in range(DAYS) if f"for {START + timedelta(days=d)}" in text)
        posts.setdefault(day, []).append(text)
    return settings, store, result, posts


@pytest.mark.timeout(2700)
def test_every_day_with_enough_data_trains_and_evaluates_with_no_manual_step(world):
    settings, store, result, _ = world
    assert result["late_events"] > 0
    runs = [date.fromisoformat(d) for d in result["days"]]
    for day, run in result["days"].items():
        assert run["state"] == "success", (day, run)
    trained = [day for day in runs if store.get_json(settings.s3.lake_bucket,
                                                     f"datasets/ranker/{day.isoformat()}/lineage.json")]
    first = START + timedelta(days=settings.dataset.min_window_days - 1)
    assert trained == [START + timedelta(days=d) for d in range((first - START).days, DAYS)]
    evaluated = [day for day in trained if any(
        key.endswith("/evaluation.json")
        for key in store.list_keys(settings.s3.models_bucket, f"ranker/runs/{day.isoformat()}/candidates/"))]
    assert evaluated == trained


def test_each_broken_hour_is_quarantined_alerted_and_left_out_of_training(world):
    settings, store, result, posts = world
    bucket = settings.s3.lake_bucket
    assert set(result["broken"]) == {check for _, check in driver.BROKEN.values()}
    for check, label in result["broken"].items():
        hour = _partition(label)
        marker = store.get_json(bucket, status.quarantine_key(hour))
        assert marker and check in {f["check"] for f in marker["failures"]}, (check, label, marker)
        alerts = [p for p in posts.get(hour.day, []) if "quarantined" in p and f"{label} {check}" in p]
        assert len(alerts) == 1, (check, posts[hour.day])
        lineage = store.get_json(bucket, f"datasets/ranker/{hour.day.isoformat()}/lineage.json")
        assert label in lineage["excluded_hours"], (check, lineage["excluded_hours"])
        assert not any(f"/{label}/" in key for key in lineage["inputs"])


def test_warnings_reach_the_data_quality_view_and_alert_at_most_once_a_day(world):
    settings, store, result, posts = world
    warned = 0
    for day in (date.fromisoformat(d) for d in result["days"]):
        statuses = overview.day_status(store, settings.s3.lake_bucket, day)
        warned += statuses.counts[overview.WARNED_VIEW]
        warnings = [p for p in posts.get(day, []) if ":warning:" in p]
        assert len(warnings) <= 1, (day, warnings)
        if statuses.counts[overview.WARNED_VIEW]:
            assert len(warnings) == 1 and "they are trained on" in warnings[0]
            assert all(h.why for h in statuses.hours if h.state == overview.WARNED_VIEW)
    for d in driver.NEW_TENANT_DAYS:  # a tenant nobody configured: a warning, and the hour trains
        day = START + timedelta(days=d)
        assert [p for p in posts.get(day, []) if ":warning:" in p and "unknown_tenant_share" in p], posts.get(day)
    assert warned >= len(driver.NEW_TENANT_DAYS)
    quarantined = set(result["broken"].values())
    assert all(p.startswith((":warning:", ":rotating_light:")) for day in posts for p in posts[day])
    assert len([p for day in posts for p in posts[day] if ":rotating_light:" in p]) == len(quarantined)


def test_late_events_in_validated_hours_are_validated_again_and_trained_on(world):
    settings, store, result, _ = world
    bucket = settings.s3.lake_bucket
    runs = [date.fromisoformat(d) for d in result["days"]]
    again = []
    for day in runs:
        summary = store.get_json(bucket, status.summary_key(day)) or {"hours": {}}
        again += [(day, int(h), v["revalidation"]) for h, v in summary["hours"].items() if v.get("revalidation")]
    assert again, "late arrivals changed validated hours"
    bad = {(h.day, h.hour) for h in map(_partition, result["broken"].values())}
    passed = [(d, h) for d, h, r in again if r["objects_state"] in ("passed", runner.PASSED_WITH_HOUR) and (d, h) not in bad]
    assert passed
    day, hour = passed[0]
    assert store.get_json(bucket, status.status_key(HourPartition(day, hour)))["state"] in ("passed", "warned")
    later = [d for d in runs if d > day and store.get_json(bucket, f"datasets/ranker/{d.isoformat()}/lineage.json")]
    lineage = store.get_json(bucket, f"datasets/ranker/{later[0].isoformat()}/lineage.json")
    label = status.label(HourPartition(day, hour))
    assert label not in lineage["excluded_hours"]
    assert sum(f"/{label}/" in key for key in lineage["inputs"]) >= 2, "the late object is trained on"
