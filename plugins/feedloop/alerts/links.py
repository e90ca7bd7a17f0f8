"""Every URL an operator is sent to from an alert, built in one place: pages inside Airflow.

Why inside Airflow: the feedloop plugin (feedloop.ops.ui) serves the GX Data Docs pages and the model
reports behind Airflow's login and permissions at `<airflow>/feedloop/...`, so a link in Slack or an
email opens for whoever may read retrain_ranker (after logging in, and back) and for nobody else,
and it never expires, unlike a presigned S3 URL, which lets anyone holding it read the lake until
it expires. Run links follow the UI's own route `/dags/<dag>/runs/<run>`. The base is Airflow's
`[api] base_url` (the one Airflow uses for its own task log links): set it to what operators open.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import quote

from feedloop.core.names import URL_PREFIX

AIRFLOW_DEFAULT_URL = "http://localhost:8080"  # what Airflow itself falls back to without [api] base_url


def airflow_base_url() -> str:
    """Airflow's `[api] base_url` (read where Airflow is configured: tasks, callbacks, the CLI)."""
    # lazy: feedloop.alerts must import without Airflow (the layer rule); only building a link reads its conf.
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or AIRFLOW_DEFAULT_URL).rstrip("/")


def airflow_run_url(dag_id: str, run_id: str, *, base_url: str | None = None) -> str:
    """The DAG run's page in the Airflow UI (grid, task logs, the Model report tab)."""
    return f"{_base(base_url)}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def data_docs_url(day: date, page: str, *, base_url: str | None = None) -> str:
    """A validation page of `day`: "index.html" (every hour) or "hour=HH/rows.html" / "hour=HH/metrics.html"."""
    return f"{_base(base_url)}{URL_PREFIX}/quality/docs/dt={day.isoformat()}/{page}"


def model_report_url(version: str, *, base_url: str | None = None) -> str:
    """A registered version's report.html (candidate vs champion, gate, data quality, lineage)."""
    return f"{_base(base_url)}{URL_PREFIX}/versions/{quote(version, safe='')}/report.html"


def _base(base_url: str | None) -> str:
    return (base_url or airflow_base_url()).rstrip("/")
