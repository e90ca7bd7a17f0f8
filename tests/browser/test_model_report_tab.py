"""The Model report tab of retrain_ranker runs: each run shows the report of its own date's version."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.browser import uidata
from tests.browser.conftest import VERSION_DAYS

pytestmark = pytest.mark.browser

SECTIONS = ("Candidate vs champion, position-debiased (held-out day)", "Raw metrics on the logged lists (held-out day)",
            "Gate checks", "Raw metrics per segment (logged lists)",
            "Data quality of the training window", "Feature importance (gain)", "Scores: calibration and distribution",
            "Lineage")


def test_each_retrain_runs_model_report_tab_shows_that_dates_version(ui, airflow, ranker_versions):
    airflow.api.wait_for_dag(uidata.RETRAIN)
    for day, version in list(zip(VERSION_DAYS, ranker_versions))[1:]:
        run_id = uidata.trigger_paused(airflow.api, uidata.RETRAIN, day)
        ui.page.goto(f"{airflow.url}/dags/{uidata.RETRAIN}/runs/{quote(run_id, safe='')}")
        ui.shot(f"run-{day}")
        ui.page.get_by_role("link", name="Model report").click()
        frame = ui.page.frame_locator("iframe[title='Model report']")
        expect(frame.locator("#run-version")).to_have_text(version)
        report = frame.frame_locator("iframe#report")  # the stored report, in a sandboxed frame of its own
        expect(report.locator("h1")).to_have_text(f"Ranker {version}")
        ui.shot(f"model-report-{day}")
        for section in SECTIONS:
            expect(report.get_by_role("heading", name=section)).to_be_visible()
        expect(frame.locator("#feedloop-run")).to_contain_text(f"logical date {day}")
        expect(report.locator("body")).to_contain_text("code version")
        window = f"{day - timedelta(days=3)} … {day + timedelta(days=1)}"  # uidata.promote_days' lineage
        expect(report.locator("body")).to_contain_text(f"data range {window} (end exclusive)")
    ui.page.goto(f"{airflow.url}/feedloop/versions/{version}/report.html")  # the whole page, for the artifacts
    ui.shot("report-page")


def test_the_tab_says_why_a_run_has_no_model(ui, airflow):
    run_id = uidata.trigger_paused(airflow.api, uidata.RETRAIN, VERSION_DAYS[0].replace(day=1))
    ui.page.goto(f"{airflow.url}/dags/{uidata.RETRAIN}/runs/{quote(run_id, safe='')}/plugin/feedloop-model-report")
    frame = ui.page.frame_locator("iframe[title='Model report']")
    expect(frame.locator("#message")).to_contain_text("no model was trained for 2026-11-01 yet")
    ui.shot("model-report-no-model")
