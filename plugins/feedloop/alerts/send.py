"""Alerts for every feedloop DAG: one Slack message and one email per incident, one more when it is resolved.

Why incidents: an on-call engineer must not get the same failure ten times, and must hear when it
is over. An incident is one DAG + task + day (feedloop.ops.incidents keeps its record in S3): the first
failure posts (Slack and email, naming the DAG, logical date, partition, every failed expectation
or gate check with observed vs expected, failing rows, days failing, a Data Docs / report link,
the Airflow run link and the exact command to run; feedloop.ops.alert_content); a retry or repeat
within `alerts.incident_window_hours` only updates the record (count, last_seen, runs); the next
success of that task for that day posts one "resolved" message. Slack incoming webhooks cannot edit
a posted message, so an update is not re-posted: the resolved message carries the count and runs.
The email of the resolution replies to the incident's email (In-Reply-To), so mail clients thread it.

Delivery goes through the providers' hooks and Airflow Connections (`alerts.slack_conn_id`,
`alerts.smtp_conn_id`), so the webhook token and SMTP password live only in Connections.
Use: `@dag(default_args=alerts.default_args(), ...)`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Literal

from airflow.sdk import BaseNotifier

from feedloop.ops import alert_content
from feedloop.ops import incidents
from feedloop.airflow import links
from feedloop.core.config import Settings, load_settings

log = logging.getLogger(__name__)


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
        run = _run(context)
        if self.on == "success":
            self._resolve(run)
        else:
            self._fail(run, context.get("exception"))

    def _fail(self, run: alert_content.Run, error: BaseException | None) -> None:
        store = incidents.IncidentStore.from_settings(self.settings)

        def failing_days() -> int:
            try:
                return store.failing_days(run.dag_id, run.task_id, run.day)
            except Exception:  # noqa: BLE001 - a count must never cost the alert
                log.exception("could not count the days %s.%s has been failing", run.dag_id, run.task_id)
                return 1

        content = alert_content.for_failure(self.settings, run, error, failing_days=failing_days)
        open_incident(self.settings, run, incidents.key(run.dag_id, run.task_id, run.partition), content,
                      resolves=f"the next success of {run.dag_id}.{run.task_id} for {run.day} resolves it")

    def _resolve(self, run: alert_content.Run) -> None:
        resolve_incident(self.settings, incidents.key(run.dag_id, run.task_id, run.partition),
                         {"text": f"{run.dag_id}.{run.task_id} succeeded for {run.day} in run {run.run_id}",
                          "run_id": run.run_id, "run_url": run.run_url})


def open_incident(settings: Settings, run: alert_content.Run, key: str, content: dict[str, Any], *,
                  resolves: str) -> None:
    """Open the incident `key` (Slack + email) or, on a repeat within the window, only update its record."""
    store = incidents.IncidentStore.from_settings(settings)
    now = datetime.now(timezone.utc)
    try:
        transition = store.fail(key, content, now=now, run_id=run.run_id)
    except Exception as exc:  # noqa: BLE001 - S3 down is exactly when the alert must still go out
        log.exception("incident state %s unavailable: alerting without de-duplication", store.uri(key))
        _raise_undelivered(deliver(settings, content, footer=f"Incident state unavailable ({exc}); this "
                                                             "alert may repeat."), content)
        return
    record = transition.record
    pending = [c for c in incidents.CHANNELS if transition.new or not record["delivered"].get(c)]
    if not pending:
        log.info("incident %s (%s) seen %s times: record updated, no new message", record["id"], key,
                 record["count"])
        return
    hours = settings.alerts.incident_window_hours
    footer = (f"Incident {record['id']}: a repeat within {hours:g} h updates it without a new message; {resolves}. "
              f"State: {store.uri(key)}")
    errors = deliver(settings, content, footer=footer, channels=pending, headers={"Message-ID": _message_id(record)})
    store.delivered(key, record["id"], errors, now=now)
    _raise_undelivered(errors, content)


def resolve_incident(settings: Settings, key: str, resolution: dict[str, Any]) -> None:
    """Resolve the open incident `key`, if any: one message, threaded under the incident's email."""
    record = incidents.IncidentStore.from_settings(settings).resolve(key, now=datetime.now(timezone.utc),
                                                                     resolution=resolution)
    if record is None:
        return
    subject, body = alert_content.resolved_email(record)
    errors = _send(settings, slack=alert_content.resolved_slack(record), subject=subject, html=body,
                   headers={"In-Reply-To": _message_id(record), "References": _message_id(record)})
    _raise_undelivered(errors, record)


def validation_incidents(settings: Settings, context: Any, result: Any) -> None:
    """The day's data incidents from a validation that did not fail its task (dataset.on_quarantined:
    exclude): one for its quarantined hours and one for its warned hours, each once per DAG + day,
    resolved by a later validation of that day without them."""
    run = _run(context)
    for kind, hours in (("quarantine", result.quarantined_hours), ("warnings", result.warned_hours)):
        key = incidents.key(run.dag_id, f"{run.task_id}:{kind}", run.partition)
        try:
            if hours:
                content = (alert_content.validation(settings, run, result.summary, report_uri=result.report_uri)
                           if kind == "quarantine" else
                           alert_content.validation_warnings(run, result.summary, report_uri=result.report_uri))
                open_incident(settings, run, key, content,
                              resolves=f"a validation of {run.day} without {kind} hours resolves it")
            else:
                resolve_incident(settings, key, {"text": f"validation of {run.day} in run {run.run_id}: no {kind} "
                                                         "hours", "run_id": run.run_id, "run_url": run.run_url})
        except Exception:  # noqa: BLE001 - validation is recorded; an alert channel down must not fail it
            log.exception("the %s alert of %s was not delivered (Connections %s / %s); the incident record keeps "
                          "it pending for the next validation of the day", kind, run.day,
                          settings.alerts.slack_conn_id, settings.alerts.smtp_conn_id)


def deliver(settings: Settings, content: dict[str, Any], *, footer: str = "",
            channels: tuple[str, ...] | list[str] = incidents.CHANNELS,
            headers: dict[str, str] | None = None) -> dict[str, str | None]:
    """Post one message to each channel; {channel: None if delivered, else the error}."""
    return _send(settings, slack=alert_content.slack_text(content, footer=footer),
                 subject=alert_content.subject(content), html=alert_content.email_html(content, footer=footer),
                 headers=headers, channels=channels)


def announce_rollback(settings: Settings, result: dict[str, Any], *, by: str, reason: str) -> dict[str, str]:
    """One informational message for a rollback that happened; never raises (the pointer already moved)."""
    from feedloop.promotion.registry import Registry

    try:
        registry = Registry.from_settings(settings)
        content = alert_content.rollback_notice(settings, result, by=by, reason=reason,
                                                report_uri=registry.version_uri(result["to"]) + "report.html")
        errors = deliver(settings, content)
    except Exception as exc:  # noqa: BLE001
        log.exception("rollback alert not sent")
        errors = dict.fromkeys(incidents.CHANNELS, f"{type(exc).__name__}: {exc}")
    for channel, error in errors.items():
        if error:
            log.warning("rollback alert via %s not delivered: %s", channel, error)
    return {c: "sent" if e is None else f"not sent: {e}" for c, e in errors.items()}


def _send(settings: Settings, *, slack: str, subject: str, html: str, headers: dict[str, str] | None = None,
          channels: tuple[str, ...] | list[str] = incidents.CHANNELS) -> dict[str, str | None]:
    cfg = settings.alerts
    errors: dict[str, str | None] = {}
    for channel in channels:
        try:
            if channel == "slack":
                from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

                SlackWebhookHook(slack_webhook_conn_id=cfg.slack_conn_id).send_text(slack)
            else:
                from airflow.providers.smtp.hooks.smtp import SmtpHook

                with SmtpHook(smtp_conn_id=cfg.smtp_conn_id) as hook:
                    hook.send_email_smtp(to=list(cfg.email_to), from_email=cfg.email_from, subject=subject,
                                         html_content=html, custom_headers=headers)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not silence the other
            log.exception("feedloop alert via %s failed", channel)
            errors[channel] = f"{type(exc).__name__}: {exc}"
        else:
            errors[channel] = None
    return errors


def _raise_undelivered(errors: dict[str, str | None], content: dict[str, Any]) -> None:
    failed = {c: e for c, e in errors.items() if e}
    if failed:
        raise RuntimeError(f"feedloop alert not delivered ({'; '.join(f'{c}: {e}' for c, e in failed.items())}): "
                           f"{content.get('kind')} {content.get('headline')}")


def _message_id(record: dict[str, Any]) -> str:
    return f"<incident-{record['id']}.{record['dag_id']}.{record['check']}@feedloop>"


def _run(context: Any) -> alert_content.Run:
    """The task instance of a callback context, with the links an operator needs."""
    ti = context["ti"]
    run_id = context.get("run_id") or ti.run_id
    logical_date = context.get("logical_date")
    dag_run = context.get("dag_run")
    when = logical_date or getattr(dag_run, "run_after", None)
    day = when.date() if when else datetime.now(timezone.utc).date()
    return alert_content.Run(dag_id=ti.dag_id, task_id=ti.task_id, run_id=run_id, day=day,
                             logical_date=logical_date, run_url=links.airflow_run_url(ti.dag_id, run_id),
                             log_url=_log_url(ti))


def _log_url(ti: Any) -> str | None:
    try:
        return ti.log_url
    except Exception:  # noqa: BLE001 - the URL needs [api] base_url; a missing one must not lose the alert
        return None

