"""The Models view in Airflow's navigation: versions, the live marker, a rollback clicked there, a year of versions."""

from __future__ import annotations

import json
import statistics
import time
from datetime import date

import httpx
import pytest
from playwright.sync_api import expect

from feedloop.promotion.pointer_change import rollback
from feedloop.promotion.registry import Registry
from feedloop.ops.ui.models import PAGE_SIZE
from tests.browser import uidata
from tests.browser.conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

MODELS = ("feedloop-models", "Models")
# the iframe document's own load, from its Navigation Timing (Airflow's SPA around it is not ours to time)
NAVIGATION_MS = """async () => {  // run in the iframe's document (the page around it mirrors its URL)
  if (document.readyState !== "complete") await new Promise(done => addEventListener("load", done));
  await new Promise(done => setTimeout(done));  // loadEventEnd is set once the load handlers returned
  const n = performance.getEntriesByType("navigation")[0];
  return n.loadEventEnd - n.startTime;
}"""


def _registry(airflow) -> Registry:
    return Registry.from_settings(airflow.settings)


def test_the_models_view_is_in_airflows_navigation_and_marks_the_live_version(ui, airflow, ranker_versions):
    live = _registry(airflow).live().pointer
    ui.page.goto(airflow.url)
    ui.page.get_by_role("link", name="Models").click()
    ui.page.wait_for_url(f"{airflow.url}/plugin/feedloop-models**")
    frame = ui.page.frame_locator(f"iframe[title='{MODELS[1]}']")
    rows = frame.locator("#versions tr[data-version]")
    for version in ranker_versions:
        expect(frame.locator(f"#versions tr[data-version='{version}']")).to_be_visible()
    ui.shot("models-view")

    assert rows.count() == min(len(_registry(airflow).versions()), PAGE_SIZE)
    expect(frame.locator(f"#versions tr[data-version='{live['version']}'] .b-live")).to_have_text("live")
    expect(frame.locator("#versions .b-live")).to_have_count(1)
    expect(frame.locator("#live-version")).to_have_text(live["version"])
    second = frame.locator(f"#versions tr[data-version='{ranker_versions[1]}']")
    expect(second).to_contain_text(ranker_versions[0])        # the champion of its day
    expect(second).to_contain_text("2026-11-08 … 2026-11-12")  # its training window
    expect(second.locator(".b-pass")).to_have_text("pass")


def test_a_rollback_clicked_in_the_models_view_flips_the_pointer_and_enters_the_history(ui, airflow, ranker_versions):
    registry = _registry(airflow)
    before = registry.live().pointer
    target = before["previous"]
    frame = ui.plugin(*MODELS)
    frame.locator("#rollback-to").select_option(target)
    frame.locator("#rollback-reason").fill("browser test: the new model hurts search")
    ui.shot("rollback-form-filled")
    frame.locator("#rollback-submit").click()
    expect(frame.locator("#done")).to_contain_text(f"rollback {before['version']} → {target}")
    ui.shot("rolled-back")

    after = registry.live().pointer  # what the serving pods read, straight from S3
    assert (after["version"], after["previous"], after["action"], after["seq"]) == \
        (target, before["version"], "rollback", before["seq"] + 1)
    assert after["promoted_by"] == "airflow-ui admin"
    assert after["reason"] == "browser test: the new model hurts search"
    entry = frame.locator(f"#history tr[data-seq='{after['seq']}']")
    for text in (before["version"], target, "rollback", "airflow-ui admin", "the new model hurts search"):
        expect(entry).to_contain_text(text)
    expect(frame.locator(f"#versions tr[data-version='{target}'] .b-live")).to_have_text("live")


def test_a_rollback_from_a_stale_page_is_refused_and_changes_nothing(ui, airflow, ranker_versions):
    registry = _registry(airflow)
    frame = ui.plugin(*MODELS)
    expect(frame.locator("#rollback-form")).to_be_visible()
    shown = registry.live().pointer
    other = next(v for v in ranker_versions if v != shown["version"])
    moved = rollback(to=other, reason="meanwhile, from the CLI", by="cli test", settings=airflow.settings)
    frame.locator("#rollback-reason").fill("clicked on a page showing an older pointer")
    frame.locator("#rollback-submit").click()
    expect(frame.locator("#error")).to_contain_text("changed since this page was shown")
    ui.shot("stale-rollback-refused")
    now = registry.live().pointer
    assert (now["version"], now["seq"]) == (moved["to"], moved["seq"])


def test_pointer_changes_need_a_login_and_a_form_from_this_airflow(airflow, ranker_versions):
    before = _registry(airflow).live().pointer
    form = {"reason": "should not apply", "shown_seq": str(before["seq"])}
    anonymous = httpx.post(f"{airflow.url}/feedloop/models/rollback", data=form, timeout=30)
    assert anonymous.status_code == 401
    assert httpx.get(f"{airflow.url}/feedloop/models", timeout=30).status_code == 401
    token = httpx.post(f"{airflow.url}/auth/token", json={"username": "admin", "password": airflow.password},
                       timeout=30).json()["access_token"]
    cross_site = httpx.post(f"{airflow.url}/feedloop/models/rollback", data=form, timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Origin": "https://elsewhere.example"})
    assert cross_site.status_code == 403 and "elsewhere.example" in cross_site.text
    assert _registry(airflow).live().pointer == before


def test_the_models_view_stays_fast_with_a_year_of_daily_versions(ui, airflow, ranker_versions):
    """365 more versions and a flip per day: each page of the view answers in under 2 s and weighs under 5 MB,
    the first view after they appeared (nothing cached) included; every version is reachable page by page."""
    registry = _registry(airflow)
    live_before = registry.live().version
    t0 = time.perf_counter()
    year = uidata.register_year(registry, date(2025, 11, 1), 365)
    made = time.perf_counter() - t0
    ids = sorted(registry.versions(), reverse=True)
    token = httpx.post(f"{airflow.url}/auth/token", json={"username": "admin", "password": airflow.password},
                       timeout=30).json()["access_token"]
    http = httpx.Client(base_url=airflow.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def fetch(query: str = "") -> tuple[float, int]:
        start = time.perf_counter()
        response = http.get(f"/feedloop/models{query}")
        assert response.status_code == 200
        return time.perf_counter() - start, len(response.content)

    assert http.get("/feedloop/static/models.svg").status_code == 200  # the plugin app is built on first use
    cold, size = fetch()  # the api-server reads the newest page's manifests and history entries once
    warm = statistics.median(fetch()[0] for _ in range(5))
    pages = -(-len(ids) // PAGE_SIZE)
    last_cold, last_size = fetch(f"?page={pages}&history_page={pages}")
    frame = ui.plugin(*MODELS)
    expect(frame.locator("#versions tr[data-version]")).to_have_count(PAGE_SIZE)
    expect(frame.get_by_role("heading", name=f"Versions ({len(ids)})")).to_be_visible()
    with_airflow = frame.locator("body").evaluate(NAVIGATION_MS)
    ui.shot("models-view-a-year-of-versions")
    fetch("?page=2")  # its versions' summaries cached: the browser's own time to load our page is measured
    frame.locator("#page-pager a.older").click()
    expect(frame.locator(f"#versions tr[data-version='{ids[PAGE_SIZE]}']")).to_be_visible()
    document = frame.locator("body").evaluate(NAVIGATION_MS)
    ui.shot("models-view-older-page")
    timings = {"versions": len(ids), "history_entries": len(registry.history()), "page_size": PAGE_SIZE,
               "register_365_s": round(made, 1), "first_view_s": round(cold, 3), "view_s_median_of_5": round(warm, 3),
               "oldest_page_first_view_s": round(last_cold, 3), "page_bytes": max(size, last_size),
               "browser_page_load_ms": round(document), "browser_first_load_with_airflow_ui_ms": round(with_airflow)}
    (SCREENSHOTS.parent / "models-view-timings.json").write_text(json.dumps(timings, indent=2))
    print("Models view with a year of versions:", timings)
    rollback(to=live_before, reason="browser test: back to before the year of versions", by="test",
             settings=airflow.settings)

    assert year[-1] in ids and year[0] in ids
    assert max(size, last_size) < 5_000_000
    assert cold < 2.0 and warm < 2.0 and last_cold < 2.0 and document < 2000, timings
