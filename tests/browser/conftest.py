"""Browser tests: a real Airflow (the embedded stack on free ports) driven by headless Chromium.

Chromium is Debian's (`apt-get install chromium chromium-driver`; .ci/run installs it), driven by
Playwright for Python. Without it the tests skip with that command, or FAIL when
FEEDLOOP_REQUIRE_SERVICES=1 (CI). Every step's screenshot is saved under
test-artifacts/screenshots/<test>/ (git-ignored; CI keeps the folder as an artifact).

Fixtures for new tests: `airflow` (settings, url, a logged-in REST client `api`) and `ui` (a signed-in
page; `ui.plugin(route, title)` opens a plugin view and returns its iframe, `ui.shot(step)` saves a
screenshot). They are package-scoped: Airflow and Chromium stop after the last browser test, not at
the end of the whole session (an idle Airflow would slow every later test on 2 cores).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from feedloop.ops import stack
from feedloop.ops.airflow_api import AirflowApi
from feedloop.core.config import Settings, load_settings, repo_root
from tests.conftest import stack_environ

CHROMIUM = os.environ.get("FEEDLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = repo_root() / "test-artifacts" / "screenshots"
INSTALL = "sudo apt-get install chromium chromium-driver (or set FEEDLOOP_CHROMIUM to a Chromium binary)"
VIEWPORT = {"width": 1440, "height": 960}
READY_TIMEOUT_S = 600  # Airflow standalone took 150 s to be ready on 2 busy cores
TIMEOUT_MS = 30_000
API_TIMEOUT_S = 120
SCREENSHOT_TIMEOUT_MS = 120_000  # a 2-core machine running Airflow: pages and iframes can take seconds
# The browser Airflow's own config: unpausing retrain_ranker runs no catchup from retrain.start_date,
# and its real runs (tests/browser/test_runs_from_the_ui.py) train small models on a few days.
AIRFLOW_ENV = {"FEEDLOOP_RETRAIN__CATCHUP": "false", "FEEDLOOP_TRAIN__NUM_BOOST_ROUND": "40",
               "FEEDLOOP_TRAIN__MIN_BOOST_ROUND": "20"}


def _missing(what: str) -> None:
    """Skip, or fail under FEEDLOOP_REQUIRE_SERVICES=1 (CI), naming what to install."""
    if os.environ.get("FEEDLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what}; FEEDLOOP_REQUIRE_SERVICES=1 makes a missing browser a failure")
    pytest.skip(f"{what}; skipped (set FEEDLOOP_REQUIRE_SERVICES=1 to fail instead)")


@pytest.fixture(scope="package")
def chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        _missing(f"no Chromium at {CHROMIUM}: install it with `{INSTALL}`")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed: pip install -r requirements.txt -c constraints.txt")
    return path


@dataclass(frozen=True)
class Airflow:
    """The running stack: settings (S3, Kafka), the UI's URL and a REST client logged in as admin."""

    settings: Settings
    url: str
    password: str
    api: AirflowApi


@pytest.fixture(scope="package")
def airflow(chromium, tmp_path_factory) -> Iterator[Airflow]:
    """A real embedded stack with Airflow standalone (this plugin loaded from plugins/), for the whole session."""
    import orjson

    state = tmp_path_factory.mktemp("browser-stack")
    environ = {**stack_environ(state, airflow=True), **AIRFLOW_ENV}
    settings = load_settings(environ={**os.environ, **environ})
    patience = max(settings.stack.ready_timeout_s, READY_TIMEOUT_S)
    settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"ready_timeout_s": patience})})
    with pytest.MonkeyPatch.context() as env:  # the Airflow processes inherit it
        for key, value in AIRFLOW_ENV.items():
            env.setenv(key, value)
        stack.up(settings, echo=lambda _msg: None)
    try:
        url = f"http://127.0.0.1:{settings.stack.airflow_port}"
        passwords = state / "airflow" / "simple_auth_manager_passwords.json.generated"
        password = orjson.loads(passwords.read_bytes())["admin"]
        api = AirflowApi(url, "admin", password)
        api.http.timeout = httpx.Timeout(API_TIMEOUT_S)  # the api-server answers slowly on busy cores
        yield Airflow(settings, url, password, api)
    finally:
        stack.down(settings, echo=lambda _msg: None)


@pytest.fixture(scope="package")
def browser(chromium) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="package")
def login_state(browser, airflow) -> dict:
    """Sign in once through Airflow's own login form; every test's browser context starts from this cookie."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    shots = Screens(page, SCREENSHOTS / "login")
    page.goto(f"{airflow.url}/auth/login?next={airflow.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(airflow.password)
    shots.take("login-form")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{airflow.url}/")
    page.get_by_role("link", name="Models").wait_for()
    shots.take("signed-in-home")
    state = context.storage_state()
    context.close()
    return state


@dataclass
class Screens:
    """Numbered full-page screenshots of one test: <folder>/<nn>-<step>.png."""

    page: Any
    folder: Path
    taken: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def take(self, step: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True, timeout=SCREENSHOT_TIMEOUT_MS)
        self.taken.append(path)
        return path


@dataclass
class UI:
    """One test's signed-in browser page on the Airflow UI, with its screenshots."""

    page: Any
    airflow: Airflow
    screens: Screens

    def shot(self, step: str) -> Path:
        return self.screens.take(step)

    def plugin(self, route: str, title: str, path: str = "") -> Any:
        """Open a feedloop page from Airflow's navigation route; returns the locator of its iframe content."""
        self.page.goto(f"{self.airflow.url}/plugin/{route}{path}")
        return self.page.frame_locator(f"iframe[title='{title}']")


@pytest.fixture
def ui(browser, airflow, login_state, request) -> Iterator[UI]:
    context = browser.new_context(viewport=VIEWPORT, storage_state=login_state)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    try:
        yield UI(page, airflow, Screens(page, SCREENSHOTS / name))
    finally:
        context.close()


# ---- the data the views show (tests/browser/uidata.py) -----------------------------------------------

VERSION_DAYS = [date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)]
QUARANTINE_DAY, QUARANTINE_HOURS, BAD_HOUR = date(2026, 11, 20), (20, 21, 22, 23), 22


@pytest.fixture(scope="package")
def ranker_versions(airflow) -> list[str]:
    """Three real versions, one per VERSION_DAYS day, the last one live (its previous: the second)."""
    from tests.browser import uidata

    return uidata.promote_days(airflow.settings, VERSION_DAYS)


@pytest.fixture(scope="package")
def quarantine(airflow) -> dict:
    """QUARANTINE_DAY ingested by the real ingest DAG, BAD_HOUR quarantined by validation."""
    from tests.browser import uidata

    return uidata.quarantined_day(airflow.settings, airflow.api, QUARANTINE_DAY, hours=QUARANTINE_HOURS,
                                  bad_hour=BAD_HOUR)
