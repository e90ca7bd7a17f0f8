"""What the Airflow plugin registers: the app under /feedloop and its entries in Airflow's navigation.

Why lazy: Airflow imports plugins in every process, including each task run (for macros), while
only the api-server serves the pages. The FastAPI app, Airflow's security module and the templates
load on the first request, so a task never pays for them.
"""

from __future__ import annotations

import threading
from typing import Any

from feedloop.core.names import MODELS_ROUTE, QUALITY_ROUTE, REPORT_ROUTE, URL_PREFIX


class LazyApp:
    """An ASGI app that builds feedloop.ops.ui.app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from feedloop.ops.ui.app import create_app  # lazy: see the module docstring

                    self._app = create_app()
        await self._app(scope, receive, send)


APP = LazyApp()

FASTAPI_APPS = [{"app": APP, "url_prefix": URL_PREFIX, "name": "feedloop"}]

EXTERNAL_VIEWS = [
    {"name": "Models", "href": f"{URL_PREFIX}/models", "destination": "nav", "url_route": MODELS_ROUTE,
     "nav_top_level": True, "icon": f"{URL_PREFIX}/static/models.svg"},
    {"name": "Data quality", "href": f"{URL_PREFIX}/quality", "destination": "nav", "url_route": QUALITY_ROUTE,
     "nav_top_level": True, "icon": f"{URL_PREFIX}/static/quality.svg"},
    {"name": "Model report", "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}/report", "destination": "dag_run",
     "url_route": REPORT_ROUTE, "icon": f"{URL_PREFIX}/static/models.svg"},
]
