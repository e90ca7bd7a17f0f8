"""Every URL an operator is sent to (alerts, CLI), built in one place.

Why one place: GX Data Docs pages and model reports are linked as presigned S3 URLs today (they
answer 200 for `alerts.link_expiry_hours` without any other login). When the feedloop Airflow UI
plugin serves them behind the Airflow login at `<airflow>/feedloop/...`, only `data_docs_url` and
`model_report_url` change. Airflow run links follow the UI's own route `/dags/<dag>/runs/<run>`
under Airflow's `[api] base_url` (the same base Airflow uses for its task log links).
"""

from __future__ import annotations

from urllib.parse import quote

from feedloop.config import Settings
from feedloop.storage import ObjectStore

AIRFLOW_DEFAULT_URL = "http://localhost:8080"  # what Airflow itself falls back to without [api] base_url


def airflow_base_url() -> str:
    """Airflow's `[api] base_url` (read where Airflow is configured: tasks, callbacks)."""
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or AIRFLOW_DEFAULT_URL).rstrip("/")


def airflow_run_url(dag_id: str, run_id: str, *, base_url: str | None = None) -> str:
    """The DAG run's page in the Airflow UI (grid, task logs, and the feedloop report tab)."""
    base = (base_url or airflow_base_url()).rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def data_docs_url(settings: Settings, uri: str) -> str:
    """A validation page: GX Data Docs of an hour, or the day's index (s3://<lake>/validation/...)."""
    return s3_page_url(settings, uri)


def model_report_url(settings: Settings, uri: str) -> str:
    """A registered version's report.html (candidate vs champion, gate, lineage)."""
    return s3_page_url(settings, uri)


def s3_page_url(settings: Settings, uri: str) -> str:
    """A GET URL for s3://bucket/key signed with the caller's S3 credentials; 200 until it expires."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    seconds = int(settings.alerts.link_expiry_hours * 3600)
    return ObjectStore.from_settings(settings).client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds)
