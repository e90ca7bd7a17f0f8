"""Failure alerts for every feedloop DAG: one Slack message (incoming webhook) and one email (SMTP).

Why one notifier for all DAGs: an on-call engineer should read the same shape of alert whatever
failed — DAG, task, logical date, the error (for a failed validation: every failed expectation
with observed vs expected values and where the report is) and the log link — and act from it
alone. Delivery goes through the providers' notifiers and Airflow Connections, so the webhook
token and SMTP password live only in Connections (AIRFLOW_CONN_* or a secrets backend).

Use: `@dag(default_args=alerts.default_args(), ...)`.
"""

from __future__ import annotations

import html
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseNotifier

from feedloop.config import AlertSettings, load_settings


def default_args(*, retries: int = 2, retry_delay: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    """default_args for feedloop DAGs: retries, and an alert when a task finally fails."""
    return {"retries": retries, "retry_delay": retry_delay, "on_failure_callback": [FeedloopNotifier()]}


class FeedloopNotifier(BaseNotifier):
    """Sends the failure of one task instance to Slack and email; settings are read when it fires."""

    template_fields = ()

    def __init__(self, *, settings: AlertSettings | None = None):
        super().__init__()
        self._settings = settings

    @cached_property
    def settings(self) -> AlertSettings:
        return self._settings or load_settings().alerts

    def notify(self, context: Any) -> None:
        subject, text = failure_message(context)
        undelivered = []
        for channel, send in (("slack", self._slack), ("email", self._email)):
            try:
                send(context, subject, text)
            except Exception as exc:  # one broken channel must not silence the other
                self.log.exception("feedloop alert via %s failed", channel)
                undelivered.append(f"{channel}: {exc}")
        if undelivered:
            raise RuntimeError(f"feedloop alert not delivered ({'; '.join(undelivered)}): {subject}")

    def _slack(self, context: Any, subject: str, text: str) -> None:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        SlackWebhookNotifier(slack_webhook_conn_id=self.settings.slack_conn_id,
                             text=f"*{subject}*\n```{text}```").notify(context)

    def _email(self, context: Any, subject: str, text: str) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(smtp_conn_id=self.settings.smtp_conn_id, from_email=self.settings.email_from,
                     to=list(self.settings.email_to), subject=subject,
                     html_content=f"<pre>{html.escape(text)}</pre>").notify(context)


def failure_message(context: Any) -> tuple[str, str]:
    """(subject, body) naming the DAG, task, logical date, run, error and log of a failed task."""
    ti = context.get("ti")
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    logical_date = context.get("logical_date")
    when = logical_date.isoformat() if logical_date else "none (manual run)"
    exc = context.get("exception")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "no exception recorded"
    day = logical_date.date() if logical_date else context.get("run_id")
    subject = f"[feedloop] {dag_id}.{task_id} failed for {day}"
    lines = [
        f"DAG: {dag_id}",
        f"Task: {task_id} (try {getattr(ti, 'try_number', '?')})",
        f"Logical date: {when}",
        f"Run: {context.get('run_id')}",
        f"Error: {error}",
        f"Log: {_log_url(ti)}",
    ]
    return subject, "\n".join(lines)


def _log_url(ti: Any) -> str:
    try:
        return ti.log_url
    except Exception:  # the URL needs [api] base_url; a missing one must not lose the alert
        return "(no log URL configured)"
