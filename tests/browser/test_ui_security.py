"""feedloop's pages inside Airflow's origin (issue 17, points 9, 11 and 13), against the real Airflow.

Stored HTML (report.html, Data Docs) is served sandboxed, so a script in it cannot run as Airflow;
every answer carries security headers; a pointer form needs the token of the login that loaded it
(no Origin, `Origin: null` or another login's page are refused); no query parameter answers 500.
"""

from __future__ import annotations

import re
from datetime import date
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from playwright.sync_api import expect

from feedloop.quality.status import day_prefix
from feedloop.promotion.registry import Registry
from tests.browser.conftest import BAD_HOUR, QUARANTINE_DAY

pytestmark = pytest.mark.browser

HOSTILE_DAY = date(2025, 6, 15)  # before the year of versions test_models_view registers
HOSTILE_VERSION = "2025-06-15-hostile"
# a stored page that tries to act as the signed-in user: read the cookie, call Airflow's API
HOSTILE_PAGE = (b"<!doctype html><html><head><title>stored page</title></head><body><h1 id='stored'>stored page</h1>"
                b"<script>document.title = 'script ran as ' + document.cookie; fetch('/api/v2/dags');</script>"
                b"</body></html>")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
TOKEN_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def _login(airflow) -> str:
    """A fresh Airflow login (JWT), as the UI's login form sets it in the _token cookie."""
    return httpx.post(f"{airflow.url}/auth/token", json={"username": "admin", "password": airflow.password},
                      timeout=60).json()["access_token"]


@pytest.fixture(scope="module")
def bearer(airflow) -> httpx.Client:
    with httpx.Client(base_url=airflow.url, headers={"Authorization": f"Bearer {_login(airflow)}"},
                      timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def hostile(airflow, ranker_versions) -> dict[str, str]:
    """A registered version whose report.html and a day whose Data Docs index carry a script."""
    registry = Registry.from_settings(airflow.settings)
    registry.register(version=HOSTILE_VERSION, manifest={"logical_date": str(HOSTILE_DAY), "parity": {"passed": False}},
                      files={"model.txt": b"hostile", "model.onnx": b"hostile", "report.html": HOSTILE_PAGE})
    registry.store.put(airflow.settings.s3.lake_bucket, day_prefix(HOSTILE_DAY) + "index.html", HOSTILE_PAGE,
                       content_type="text/html")
    return {"report": f"/feedloop/versions/{HOSTILE_VERSION}/report.html",
            "docs": f"/feedloop/quality/docs/dt={HOSTILE_DAY}/index.html"}


# ---- 9: stored HTML is sandboxed; every answer has security headers -----------------------------------------

def _sandboxed(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("sandbox") == "sandbox", csp  # no allow-scripts, no allow-same-origin
    assert "default-src 'none'" in csp, csp             # no CDN script or stylesheet without a hash
    assert response.headers.get("x-content-type-options") == "nosniff"


def test_stored_report_and_data_docs_are_served_sandboxed(bearer, hostile):
    for path in hostile.values():
        response = bearer.get(path)
        assert response.status_code == 200 and b"stored page" in response.content
        _sandboxed(response)


@pytest.mark.parametrize("which", ["report", "docs"])
def test_a_script_in_a_stored_page_does_not_run_in_airflows_origin(ui, airflow, hostile, which):
    ui.page.goto(f"{airflow.url}{hostile[which]}")
    expect(ui.page.locator("#stored")).to_have_text("stored page")
    ui.shot(f"hostile-{which}")
    assert ui.page.title() == "stored page"               # the script never ran
    assert ui.page.evaluate("window.origin") == "null"    # an opaque origin: no cookie, no Airflow API


def test_real_data_docs_stay_readable_under_the_sandbox(ui, airflow, quarantine, bearer):
    """GX's pages load their CSS/JS from CDNs: blocked now, so the page must read without them."""
    hour = f"/feedloop/quality/docs/dt={QUARANTINE_DAY}/hour={BAD_HOUR:02d}/rows.html"
    _sandboxed(bearer.get(hour))
    for path in (hour, f"/feedloop/quality/docs/dt={QUARANTINE_DAY}/index.html"):
        ui.page.goto(f"{airflow.url}{path}")
        body = ui.page.locator("body")
        expect(body).to_contain_text("position_range" if path.endswith("index.html") else "engagement_hour")
        ui.shot("data-docs-" + path.rsplit("/", 2)[-2 if "hour=" in path else -1].replace(".html", ""))
        assert ui.page.evaluate("window.origin") == "null"
    # GX's status icons (Font Awesome from a CDN, blocked) read as words from our stylesheet
    icon = "getComputedStyle(document.querySelector('.fas.fa-times'), '::before').content"
    ui.page.goto(f"{airflow.url}{hour}")
    assert "failed" in ui.page.evaluate(icon)


def test_the_model_report_tab_shows_the_report_sandboxed_under_its_own_banner(ui, airflow, hostile):
    from tests.browser import uidata

    run_id = uidata.trigger_paused(airflow.api, uidata.RETRAIN, HOSTILE_DAY)
    ui.page.goto(f"{airflow.url}/feedloop/runs/{uidata.RETRAIN}/{quote(run_id, safe='')}/report")
    expect(ui.page.locator("#run-version")).to_have_text(HOSTILE_VERSION)
    report = ui.page.frame_locator("iframe#report")
    expect(report.locator("#stored")).to_have_text("stored page")
    ui.shot("model-report-tab-hostile")
    frame = next(f for f in ui.page.frames if f.url.endswith("/report.html"))
    assert frame.evaluate("document.title") == "stored page" and frame.evaluate("window.origin") == "null"


@pytest.mark.parametrize("path", [
    "/feedloop/models", "/feedloop/quality", "/feedloop/static/models.svg", "/feedloop/versions/nope/report.html",
    "/feedloop/quality?days=0", "/feedloop/runs/retrain_ranker/no-such-run/report",
])
def test_every_feedloop_answer_carries_security_headers(bearer, airflow, path, ranker_versions):
    for response in (bearer.get(path), httpx.get(f"{airflow.url}{path}", timeout=60)):  # signed in, and not
        headers = response.headers
        assert headers.get("x-content-type-options") == "nosniff", (path, response.status_code)
        assert headers.get("referrer-policy") == "same-origin"
        assert headers.get("x-frame-options") == "SAMEORIGIN"
        csp = headers.get("content-security-policy", "")
        assert "frame-ancestors 'self'" in csp and "default-src 'none'" in csp, csp
        if response.headers.get("content-type", "").startswith("text/html"):
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


@settings(max_examples=40, deadline=None)
@given(version=ANY_TEXT, page=ANY_TEXT)
def test_artifact_routes_read_only_the_objects_they_serve(bearer, version, page):
    """Any version id or Data Docs page name (../, %2F, live.json...): 404 or 422, never another object."""
    for path in (f"/feedloop/versions/{quote(version, safe='')}/report.html",
                 f"/feedloop/quality/docs/dt={QUARANTINE_DAY}/{quote(page, safe='/')}"):
        response = bearer.get(path)
        # "." or "" reach the day's own folder, which the router redirects to the same day's docs (CI, hypothesis)
        same_day = response.status_code in (307, 308) and (
            f"/feedloop/quality/docs/dt={QUARANTINE_DAY}" in response.headers.get("location", ""))
        assert response.status_code in (404, 422) or same_day or (
            response.status_code == 200 and re.fullmatch(r"index\.html|hour=\d{2}/(rows|metrics)\.html", page)), \
            (path, response.status_code, response.text[:300])


@settings(max_examples=30, deadline=None)
@given(day=ANY_TEXT, dag_id=ANY_TEXT, run_id=ANY_TEXT)
def test_any_path_parameter_is_answered_never_with_a_500(bearer, day, dag_id, run_id):
    for path in (f"/feedloop/quality/docs/dt={quote(day, safe='')}/index.html",
                 f"/feedloop/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/report",
                 f"/feedloop/runs/retrain_ranker/{quote(run_id, safe='')}/report.html"):
        response = bearer.get(path)
        assert response.status_code < 500, (path, response.status_code, response.text[:300])


@pytest.mark.parametrize("path", [
    "/feedloop/versions/..%2F..%2Flive.json/report.html", "/feedloop/versions/%2E%2E/report.html",
    f"/feedloop/quality/docs/dt={QUARANTINE_DAY}/..%2F..%2F..%2Franker%2Flive.json",
    f"/feedloop/quality/docs/dt={QUARANTINE_DAY}/hour=22/%2E%2E/%2E%2E/index.html",
])
def test_traversal_in_artifact_keys_is_refused(bearer, path):
    response = bearer.get(path)
    assert response.status_code in (404, 422) and b'"version"' not in response.content, response.text[:300]


# ---- 13: pointer forms need this login's token ------------------------------------------------------------

def _page_token(airflow, login: str) -> str:
    html = httpx.get(f"{airflow.url}/feedloop/models", cookies={"_token": login}, timeout=120).text
    found = TOKEN_FIELD.search(html)
    return found[1] if found else ""


@pytest.mark.parametrize(("origin", "token_from"), [
    pytest.param(None, None, id="no-origin-no-token"),
    pytest.param("null", None, id="origin-null-no-token"),
    pytest.param(None, "forged", id="a-made-up-token"),
    pytest.param(None, "another-login", id="the-token-of-another-logins-page"),
])
def test_a_pointer_form_without_this_logins_token_is_refused_and_changes_nothing(airflow, ranker_versions,
                                                                                 origin, token_from):
    registry = Registry.from_settings(airflow.settings)
    before = registry.live().pointer
    login = _login(airflow)
    token = {None: None, "forged": "0" * 64, "another-login": _page_token(airflow, _login(airflow))}[token_from]
    form = {"reason": "forged from another site", "shown_seq": str(before["seq"]), "to": before["previous"]}
    if token is not None:
        form["csrf_token"] = token
    headers = {"Origin": origin} if origin else {}
    refused = httpx.post(f"{airflow.url}/feedloop/models/rollback", data=form, cookies={"_token": login},
                         headers=headers, timeout=120)
    assert refused.status_code == 403, refused.text[:300]
    assert "csrf_token" in refused.text and "reload" in refused.text
    assert registry.live().pointer == before


def test_the_token_of_the_page_this_login_loaded_applies_the_change(airflow, ranker_versions):
    """The token is the lock, not the Origin header: a page's own form works without one."""
    registry = Registry.from_settings(airflow.settings)
    before = registry.live().pointer
    login = _login(airflow)
    form = {"reason": "browser test: with this page's token", "shown_seq": str(before["seq"]),
            "to": before["previous"], "csrf_token": _page_token(airflow, login)}
    applied = httpx.post(f"{airflow.url}/feedloop/models/rollback", data=form, cookies={"_token": login}, timeout=120)
    assert applied.status_code == 303, applied.text[:300]
    assert registry.live().pointer["seq"] == before["seq"] + 1


# ---- 11: every query parameter is validated: 4xx naming it, never 500 -------------------------------------

@pytest.mark.parametrize(("path", "params", "name"), [
    pytest.param("/feedloop/quality", {"end": "9999-12-31"}, "end", id="quality-end-at-the-end-of-time"),
    pytest.param("/feedloop/quality", {"end": "0001-01-01", "days": "62"}, "end", id="quality-end-before-time"),
    pytest.param("/feedloop/quality", {"end": "2026-02-30"}, "end", id="quality-end-not-a-day"),
    pytest.param("/feedloop/quality", {"days": "0"}, "days", id="quality-days-zero"),
    pytest.param("/feedloop/quality", {"days": "63"}, "days", id="quality-days-past-the-max"),
    pytest.param("/feedloop/models", {"page": "0"}, "page", id="models-page-zero"),
    pytest.param("/feedloop/models", {"history_page": "1" * 5000}, "history_page", id="models-page-5000-digits"),
    pytest.param("/feedloop/models", {"changed": "latest"}, "changed", id="models-changed-not-a-number"),
])
def test_a_bad_query_parameter_is_a_4xx_naming_it(bearer, path, params, name):
    response = bearer.get(path, params=params)
    assert response.status_code == 422, (response.status_code, response.text[:300])  # ui.app._bad_parameter
    assert name in response.text and "leave it out" in response.text, response.text[:300]


def test_the_quality_views_earlier_and_later_links_stay_in_range(bearer):
    for end in ("1970-01-01", "2999-12-31"):
        page = bearer.get("/feedloop/quality", params={"end": end, "days": "62"})
        assert page.status_code == 200, page.text[:300]
        for link in re.findall(r'href="(/feedloop/quality\?[^"]+)"', page.text):
            assert bearer.get(link.replace("&amp;", "&")).status_code == 200, link


@FUZZ
@given(route=st.sampled_from([("/feedloop/quality", "end"), ("/feedloop/quality", "days"),
                              ("/feedloop/models", "page"), ("/feedloop/models", "history_page"),
                              ("/feedloop/models", "changed")]),
       value=ANY_TEXT | st.integers().map(str) | st.dates().map(str))
def test_any_query_parameter_value_is_answered_never_with_a_500(bearer, route, value):
    path, name = route
    response = bearer.get(path, params={name: value})
    assert response.status_code < 500, (name, value, response.text[:300])
    if response.status_code >= 400:
        assert response.status_code == 422 and name in orjson.loads(response.content)["message"], \
            (name, value, response.text[:300])
