"""report.html in Chromium, opened on its own (no Airflow): its own Content-Security-Policy lets its style and
its inline plots through and nothing else, so a page served without a CSP header still loads and runs nothing."""

from __future__ import annotations

import pytest

from feedloop.training import report
from tests.unit.report.test_report import inputs

pytestmark = pytest.mark.browser


def test_the_report_draws_its_style_and_plots_under_its_own_policy_with_no_violation(browser, tmp_path):
    path = tmp_path / "report.html"
    path.write_bytes(report.render(**inputs(["x$^$y", "<img src=x onerror=alert(1)>"])))
    page = browser.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.on("dialog", lambda d: messages.append(f"dialog {d.message}"))
    try:
        page.goto(path.as_uri())
        assert page.evaluate("getComputedStyle(document.querySelector('td')).borderTopStyle") == "solid"
        assert page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length") == 5
    finally:
        page.close()
    assert not [m for m in messages if "Content Security Policy" in m or m.startswith("dialog")], messages
