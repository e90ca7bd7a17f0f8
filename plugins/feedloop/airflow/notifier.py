"""The alerts' Airflow side: every feedloop DAG's default_args and the notifier its task callbacks fire.

Why thin: what an alert says and how it is delivered (feedloop.alerts.send) import without Airflow, so
the promotion steps can announce a rollback; this module only turns a callback's context into the
task run it is about. Use: `@dag(default_args=notifier.default_args(), ...)`.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from airflow.sdk import BaseNotifier

from feedloop.alerts import send
from feedloop.alerts.content import Run
from feedloop.core.config import Settings, load_settings


def default_args(*, retries: int = 2, retry_delay: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    """default_args for feedloop DAGs: retries, an incident when a task finally fails, resolved when it succeeds."""
    return {"retries": retries, "retry_delay": retry_delay,
            "on_failure_callback": [FeedloopNotifier()], "on_success_callback": [FeedloopNotifier(on="success")]}


class FeedloopNotifier(BaseNotifier):
    """on="failure": open or update the task's incident; on="success": resolve it. Settings are read when it fires."""

    template_fields = ()

    def __init__(self, *, on: Literal["failure", "success"] = "failure", settings: Settings | None = None):
        super().__init__()
        self.on = on
        self._settings = settings

    @cached_property
    def settings(self) -> Settings:
        return self._settings or load_settings()

    def notify(self, context: Any) -> None:
        run = Run.from_context(context)
        if self.on == "success":
            send.task_succeeded(self.settings, run)
        else:
            send.task_failed(self.settings, run, context.get("exception"))
