"""Alerts for every feedloop DAG: one Slack message and one email per incident, one more when it is resolved.

Why incidents: an on-call engineer must not get the same failure ten times, and must hear when it
is over. An incident is one DAG + task + day (feedloop.alerts.incidents keeps its record in S3): the first
failure posts (Slack and email, naming the DAG, logical date, partition, every failed expectation
or gate check with observed vs expected, failing rows, days failing, a Data Docs / report link,
the Airflow run link and the exact command to run; feedloop.alerts.content); a retry or repeat
within `alerts.incident_window_hours` only updates the record (count, last_seen, runs); the next
success of that task for that day posts one "resolved" message. Slack incoming webhooks cannot edit
a posted message, so an update is not re-posted: the resolved message carries the count and runs.
The email of the resolution replies to the incident's email (In-Reply-To), so mail clients thread it.

Delivery goes through the providers' hooks and Airflow Connections (`alerts.slack_conn_id`,
`alerts.smtp_conn_id`), so the webhook token and SMTP password live only in Connections. The hooks
are imported only when a message goes out, so this module imports without Airflow: the promotion
steps announce a rollback through it, and the DAGs' callbacks (feedloop.airflow.notifier) fire it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from feedloop.alerts import incidents, render
from feedloop.alerts.content import Run, for_failure, rollback_notice, validation, validation_warnings
from feedloop.core import layout
from feedloop.core.config import Settings

log = logging.getLogger(__name__)


def task_failed(settings: Settings, run: Run, error: BaseException | None) -> None:
    """Open or update the incident of a task that finally failed."""
    store = incidents.IncidentStore.from_settings(settings)

    def failing_days() -> int:
        try:
            return store.failing_days(run.dag_id, run.task_id, run.day)
        except Exception:  # noqa: BLE001 - a count must never cost the alert
            log.exception("could not count the days %s.%s has been failing", run.dag_id, run.task_id)
            return 1

    content = for_failure(settings, run, error, failing_days=failing_days)
    open_incident(settings, run, incidents.key(run.dag_id, run.task_id, run.partition), content,
                  resolves=f"the next success of {run.dag_id}.{run.task_id} for {run.day} resolves it", store=store)


def task_succeeded(settings: Settings, run: Run) -> None:
    """Resolve the incident of the task for its day, if one is open."""
    resolve_incident(settings, incidents.key(run.dag_id, run.task_id, run.partition),
                     {"text": f"{run.dag_id}.{run.task_id} succeeded for {run.day} in run {run.run_id}",
                      "run_id": run.run_id, "run_url": run.run_url})


def open_incident(settings: Settings, run: Run, key: str, content: dict[str, Any], *, resolves: str,
                  store: incidents.IncidentStore | None = None) -> None:
    """Open the incident `key` (Slack + email) or, on a repeat within the window, only update its record.
    store: one already made for these settings (a new one costs an S3 client and a Connection lookup)."""
    store = store or incidents.IncidentStore.from_settings(settings)
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


def resolve_incident(settings: Settings, key: str, resolution: dict[str, Any], *,
                     store: incidents.IncidentStore | None = None) -> None:
    """Resolve the open incident `key`, if any: one message, threaded under the incident's email."""
    store = store or incidents.IncidentStore.from_settings(settings)
    record = store.resolve(key, now=datetime.now(timezone.utc), resolution=resolution)
    if record is None:
        return
    subject, body = render.resolved_email(record)
    errors = _send(settings, slack=render.resolved_slack(record), subject=subject, html=body,
                   headers={"In-Reply-To": _message_id(record), "References": _message_id(record)})
    _raise_undelivered(errors, record)


def validation_incidents(settings: Settings, context: Any, result: Any) -> None:
    """The day's data incidents from a validation that did not fail its task (dataset.on_quarantined:
    exclude): one for its quarantined hours and one for its warned hours, each once per DAG + day,
    resolved by a later validation of that day without them. context: the validate task's Airflow context."""
    run = Run.from_context(context)
    store = incidents.IncidentStore.from_settings(settings)
    for kind, hours in (("quarantine", result.quarantined_hours), ("warnings", result.warned_hours)):
        key = incidents.key(run.dag_id, f"{run.task_id}:{kind}", run.partition)
        try:
            if hours:
                content = (validation(settings, run, result.summary, report_uri=result.report_uri)
                           if kind == "quarantine" else
                           validation_warnings(run, result.summary, report_uri=result.report_uri))
                open_incident(settings, run, key, content, store=store,
                              resolves=f"a validation of {run.day} without {kind} hours resolves it")
            else:
                resolve_incident(settings, key, {"text": f"validation of {run.day} in run {run.run_id}: no {kind} "
                                                         "hours", "run_id": run.run_id, "run_url": run.run_url},
                                 store=store)
        except Exception:  # noqa: BLE001 - validation is recorded; an alert channel down must not fail it
            log.exception("the %s alert of %s was not delivered (Connections %s / %s); the incident record keeps "
                          "it pending for the next validation of the day", kind, run.day,
                          settings.alerts.slack_conn_id, settings.alerts.smtp_conn_id)


def deliver(settings: Settings, content: dict[str, Any], *, footer: str = "",
            channels: tuple[str, ...] | list[str] = incidents.CHANNELS,
            headers: dict[str, str] | None = None) -> dict[str, str | None]:
    """Post one message to each channel; {channel: None if delivered, else the error}."""
    return _send(settings, slack=render.slack_text(content, footer=footer),
                 subject=render.subject(content), html=render.email_html(content, footer=footer),
                 headers=headers, channels=channels)


def announce_rollback(settings: Settings, result: dict[str, Any], *, by: str, reason: str) -> dict[str, str]:
    """One informational message for a rollback that happened; never raises (the pointer already moved)."""
    try:
        report_uri = layout.version_uri(settings.s3.models_bucket, result["to"]) + "report.html"
        content = rollback_notice(settings, result, by=by, reason=reason, report_uri=report_uri)
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
            # lazy: the providers' hooks load Airflow; imported only when a message goes out (see the docstring).
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
