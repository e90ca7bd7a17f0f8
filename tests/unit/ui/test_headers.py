"""Security headers: every answer of an app wrapped by SecurityHeaders carries them, a route's own CSP wins."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from feedloop.ops.ui import headers


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.add_middleware(headers.SecurityHeaders)

    @app.get("/page")
    def page() -> HTMLResponse:
        return HTMLResponse("<h1>ours</h1>")

    @app.get("/stored")
    def stored() -> HTMLResponse:
        return headers.stored_html(b"<script>alert(1)</script>")

    @app.get("/missing")
    def missing() -> None:
        raise HTTPException(404, "no such thing")

    @app.get("/cached")
    def cached() -> HTMLResponse:
        return HTMLResponse("icon", headers={"Cache-Control": "max-age=60"})

    return TestClient(app)


@pytest.mark.parametrize("path", ["/page", "/missing", "/nowhere", "/cached"],
                         ids=["page", "error", "no-route", "icon"])
def test_every_answer_gets_the_page_policy_and_the_other_headers(client, path):
    found = client.get(path).headers
    assert found["content-security-policy"] == headers.PAGE_POLICY
    for name, value in headers.DEFAULTS.items():
        if name != "cache-control":
            assert found[name] == value


def test_a_routes_own_headers_win(client):
    assert client.get("/cached").headers["cache-control"] == "max-age=60"
    assert client.get("/page").headers["cache-control"] == "no-store"


def test_stored_html_is_sandboxed_without_scripts_or_same_origin(client):
    policy = client.get("/stored").headers["content-security-policy"]
    directives = [d.strip() for d in policy.split(";")]
    assert directives[0] == "sandbox" and "allow-" not in policy
    assert "default-src 'none'" in directives and "script-src" not in policy
    assert client.get("/stored").headers["x-content-type-options"] == "nosniff"


def test_our_pages_run_no_inline_script():
    script = next(d for d in headers.PAGE_POLICY.split("; ") if d.startswith("script-src"))
    assert script == "script-src 'self'"
