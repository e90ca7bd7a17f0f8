"""Security headers on every answer of the feedloop app: pages, JSON, errors, icons and stored HTML.

Why: the app answers inside Airflow's origin, so whatever it serves runs with the signed-in user's
cookie. Our own pages may run only script files served from this origin (no inline script, so text
that slipped past escaping cannot run), post forms only here, and be framed only by Airflow. HTML
that tasks wrote to S3 (report.html, GX Data Docs) is not ours to trust: it gets `sandbox` on top,
an opaque origin with no script, no form and no cookie, and fetches nothing from elsewhere (GX's
CDN scripts and stylesheets carry no integrity hash).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders

PAGE_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'unsafe-inline'", "img-src 'self' data:",
    "frame-src 'self'", "form-action 'self'", "frame-ancestors 'self'", "base-uri 'none'"])
STORED_POLICY = "; ".join([
    "sandbox", "default-src 'none'", "style-src 'unsafe-inline'", "img-src data:", "form-action 'none'",
    "frame-ancestors 'self'", "base-uri 'none'"])
DEFAULTS = {
    "content-security-policy": PAGE_POLICY,
    "x-content-type-options": "nosniff",         # a stored object is never run as a script or stylesheet
    "x-frame-options": "SAMEORIGIN",             # for browsers without frame-ancestors
    "referrer-policy": "same-origin",            # run ids and versions in our URLs stay here
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",                 # pages carry form tokens and private figures
}


def stored_html(body: bytes) -> HTMLResponse:
    """HTML written by a task (report.html, Data Docs), served sandboxed."""
    return HTMLResponse(body, headers={"content-security-policy": STORED_POLICY})


class SecurityHeaders:
    """ASGI middleware: DEFAULTS on every response, unless the route set that header itself."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULTS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
