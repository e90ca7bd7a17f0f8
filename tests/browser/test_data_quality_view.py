"""The Data quality view: per day and hour, a quarantined partition shows as such, with its links."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser import uidata
from tests.browser.conftest import BAD_HOUR, QUARANTINE_DAY, QUARANTINE_HOURS

pytestmark = pytest.mark.browser

QUALITY = ("feedloop-data-quality", "Data quality")


def test_a_quarantined_hour_shows_as_quarantined_with_its_data_docs_and_runs(ui, airflow, quarantine):
    frame = ui.plugin(*QUALITY)
    day = frame.locator(f"#grid tr[data-day='{QUARANTINE_DAY}']")
    expect(day.locator(f"td[data-hour='{BAD_HOUR:02d}']")).to_have_attribute("data-state", "quarantined")
    ui.shot("data-quality-grid")
    for hour in QUARANTINE_HOURS:
        if hour != BAD_HOUR:
            expect(day.locator(f"td[data-hour='{hour:02d}']")).to_have_attribute("data-state", "validated")
    expect(day.locator("td[data-hour='03']")).to_have_attribute("data-state", "missing")

    detail = frame.locator(f"table.hours[data-day='{QUARANTINE_DAY}'] tr[data-hour='{BAD_HOUR:02d}']")
    expect(detail).to_contain_text("quarantined")
    expect(detail).to_contain_text("position_range")
    expect(detail.locator("a.ingest-run").first).to_be_visible()
    ingest_run = detail.locator("a.ingest-run").first.inner_text()
    assert ingest_run in {r["dag_run_id"] for r in airflow.api.dag_runs(uidata.INGEST)}
    detail.scroll_into_view_if_needed()
    ui.shot("data-quality-quarantined-hour")

    docs = detail.locator("a.docs").first.get_attribute("href")
    page = ui.page.request.get(f"{airflow.url}{docs}")  # with the browser's login cookie
    assert page.status == 200 and "engagement_hour" in page.text()

    run = frame.locator(f"#day-{QUARANTINE_DAY} ~ div a.validation-run").first
    expect(run).to_have_text(quarantine["validation_run"])
    run.click()
    ui.page.wait_for_url(f"**/dags/{uidata.RETRAIN}/runs/{quarantine['validation_run']}")
    breadcrumb = ui.page.get_by_role("navigation", name="breadcrumb")  # Airflow's own run page, not ours
    expect(breadcrumb.get_by_role("link", name=quarantine["validation_run"])).to_be_visible()
    expect(ui.page.locator("iframe")).to_have_count(0)
    ui.shot("validation-run-in-airflow")
