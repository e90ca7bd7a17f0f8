"""What an alert says: one incident's facts and the exact next steps (feedloop.alerts.render draws them).

Why its own module: a failed validation, a blocked gate, a failed ONNX parity, any other task
failure and a rollback each know different facts, but the on-call engineer reads ONE shape: DAG,
logical date, partition, what failed (observed vs expected, failing rows), for how many days, links
that open (Data Docs, Airflow run), and the command to run. The content is a plain dict, stored in
the incident record, so the "resolved" message can name what it resolves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

from feedloop.alerts import links
from feedloop.contract.decisions import GateDecision
from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.errors import PromotionBlocked
from feedloop.core.storage import ObjectStore

STREAK_DAYS = 30  # how far back "failing N days in a row" looks
_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Run:
    """The task instance an alert is about."""

    dag_id: str
    task_id: str
    run_id: str
    day: date                     # the logical date's day (the run's day for runs without one)
    logical_date: datetime | None
    run_url: str
    log_url: str | None = None

    @property
    def partition(self) -> str:
        return f"dt={self.day.isoformat()}"

    @classmethod
    def from_context(cls, context: Any) -> Run:
        """The task instance of an Airflow task or callback context, with the links an operator needs."""
        ti = context["ti"]
        run_id = context.get("run_id") or ti.run_id
        logical_date = context.get("logical_date")
        dag_run = context.get("dag_run")
        when = logical_date or getattr(dag_run, "run_after", None)
        day = when.date() if when else datetime.now(timezone.utc).date()
        return cls(dag_id=ti.dag_id, task_id=ti.task_id, run_id=run_id, day=day, logical_date=logical_date,
                   run_url=links.airflow_run_url(ti.dag_id, run_id), log_url=_log_url(ti))


def _log_url(ti: Any) -> str | None:
    try:
        return ti.log_url
    except Exception:  # noqa: BLE001 - the URL needs [api] base_url; a missing one must not lose the alert
        return None


def for_failure(settings: Settings, run: Run, error: BaseException | None, *,
                failing_days: Callable[[], int]) -> dict[str, Any]:
    """The incident content of a failed task: validation and promotion failures carry their own facts."""
    # lazy: feedloop.quality loads pyarrow, which the DAG files importing the notifier must parse without.
    from feedloop.quality.runner import ValidationFailed

    for exc in _chain(error):
        if isinstance(exc, ValidationFailed):
            return validation(settings, run, exc.result.summary, report_uri=exc.result.report_uri)
        if isinstance(exc, PromotionBlocked) and exc.version:  # one without a candidate reads as any failure
            return blocked(settings, run, exc, failing_days=failing_days())
    return task_failure(run, error, failing_days=failing_days())


def validation(settings: Settings, run: Run, summary: dict[str, Any], *, report_uri: str) -> dict[str, Any]:
    """A failed validation: every failed expectation of the quarantined hours (and of the day)."""
    from feedloop.quality.report import failure_line  # lazy: feedloop.quality loads pyarrow (see for_failure)

    bucket = report_uri[5:].split("/", 1)[0]
    failed_hours = sorted(int(h) for h, v in summary["hours"].items() if v["state"] == "failed")
    failures = list(summary.get("day_failures", [])) + [
        f for h in failed_hours for f in summary["hours"][f"{h:02d}"]["failures"]]
    streaks = failing_streaks({f["check"] for f in failures}, _earlier_summaries(settings, bucket, run.day))
    details = []
    for f in failures:
        parts = [failure_line(f)]
        if f.get("column"):
            parts.append(f"column {f['column']}")
        if f.get("failing_rows") is not None:
            parts.append(f"failing rows {f['failing_rows']}")
        days = streaks[f["check"]]
        parts.append(f"failing {_days(days)} in a row (since {run.day - timedelta(days=days - 1)})")
        details.append("; ".join(parts))
    rows = [f["failing_rows"] for f in failures if f.get("failing_rows") is not None]
    pages = dict.fromkeys((f["partition"], f["docs"]) for f in failures if f.get("docs"))
    doc_links = [(f"Data Docs {partition} ({docs})",
                  links.data_docs_url(run.day, f"{partition.split('/', 1)[1]}/{docs}.html"))
                 for partition, docs in pages]
    doc_links.append((f"Validation report {run.partition} (all hours)", links.data_docs_url(run.day, "index.html")))
    partitions = [f"{run.partition}/hour={h:02d}" for h in failed_hours] or [run.partition]
    return _content(
        run, kind="validation failed",
        headline=f"{len(failed_hours)} of {len(summary['hours'])} hour partition(s) quarantined"
                 + (", " + "; ".join(f["observed"] for f in summary["day_failures"]) if summary.get("day_failures")
                    else ""),
        partitions=partitions, details_title="Failed expectations (observed vs expected)",
        details=details + [f"Report: {report_uri}"], failing_rows=sum(rows) if rows else None,
        failing_days=max(streaks.values(), default=1), links=doc_links + [("Airflow run", run.run_url)],
        actions=validation_actions(run, failed_hours, _rollback_target(settings),
                                   excluded=settings.dataset.on_quarantined == "exclude"))


def validation_warnings(run: Run, summary: dict[str, Any], *, report_uri: str) -> dict[str, Any]:
    """Unusual but valid data (warn checks): every warned hour of the day in one message; they all train."""
    from feedloop.quality.report import failure_line  # lazy: feedloop.quality loads pyarrow (see for_failure)

    hours = sorted(int(h) for h, v in summary["hours"].items() if v.get("warnings"))
    warnings = [f for h in hours for f in summary["hours"][f"{h:02d}"]["warnings"]]
    checks = sorted({f["check"] for f in warnings})
    return _content(
        run, kind="validation warnings",
        headline=f"{len(hours)} of {len(summary['hours'])} hour partition(s) unusual ({', '.join(checks)}); "
                 "they are trained on",
        partitions=[f"{run.partition}/hour={h:02d}" for h in hours],
        details_title="Warnings (observed vs expected)", details=[failure_line(f) for f in warnings]
        + [f"Report: {report_uri}"], failing_rows=None, failing_days=1,
        links=[(f"Validation report {run.partition} (all hours)", links.data_docs_url(run.day, "index.html")),
               ("Airflow run", run.run_url)],
        actions=[("Nothing blocks training. If the change is expected (a campaign, a new surface), widen the band "
                  "or make the check silent for a tenant: quality.thresholds / quality.tenants.<tenant> in "
                  "include/config/feedloop.yaml", None),
                 ("If it is a real problem (a producer losing events), make the check block: quality.severity",
                  "feedloop data status --day " + run.day.isoformat())])


def blocked(settings: Settings, run: Run, exc: PromotionBlocked, *, failing_days: int) -> dict[str, Any]:
    """A candidate the gate refused, whose ONNX export failed parity, or that waits on a running canary.

    Read from the error's fields and its gate decision (gate.json), never from its text."""
    record = _read_uri(settings, exc.gate_uri) if exc.gate_uri else None
    failures = GateDecision.from_dict(record).failures if record else ()
    details = [c.line() for c in failures] or [str(exc)]
    kind, headline = {
        "gate": ("gate blocked", f"candidate {exc.version} blocked; champion {exc.champion or '(none)'} stays live"),
        "parity": ("ONNX parity failed", f"{exc.version} is not registered; the live model is unchanged"),
        "canary": ("promotion waiting", f"{exc.version} not promoted while a canary runs"),
        "approval": ("approval missing", f"{exc.version} needs a human's Approve and none is recorded; "
                                         f"{exc.champion or 'the live model'} stays live"),
    }.get(exc.check, ("promotion blocked", f"{exc.version} not promoted ({exc.check}); the live model is unchanged"))
    found = [("Model report " + exc.version, links.model_report_url(exc.version))] \
        if exc.report_uri and _exists(settings, exc.report_uri) else []
    return _content(run, kind=kind, headline=headline, partitions=[run.partition],
                    details_title="Failed checks (candidate vs limit)",
                    details=details + [f"Candidate: {exc.version}; champion: {exc.champion or '(none)'}"],
                    failing_rows=None, failing_days=failing_days, links=found + [("Airflow run", run.run_url)],
                    actions=blocked_actions(run, exc, _rollback_target(settings)))


def task_failure(run: Run, error: BaseException | None, *, failing_days: int) -> dict[str, Any]:
    """Any other failed task: the error, the task log and what to do for that DAG."""
    text = f"{type(error).__name__}: {error}" if error is not None else "no exception recorded (see the task log)"
    if len(text) > _ERROR_CHARS:
        text = text[:_ERROR_CHARS] + " ... (the rest is in the task log)"
    log_link = [("Task log", run.log_url)] if run.log_url else []
    return _content(run, kind="task failed", headline=text.splitlines()[0][:160], partitions=[run.partition],
                    details_title="Error", details=[text], failing_rows=None, failing_days=failing_days,
                    links=[("Airflow run", run.run_url)] + log_link, actions=task_actions(run))


def rollback_notice(settings: Settings, result: dict[str, Any], *, by: str, reason: str,
                    report_uri: str | None) -> dict[str, Any]:
    """An informational message: the live model was rolled back (who, why, from -> to)."""
    found = [(f"Model report {result['to']}", links.model_report_url(result["to"]))] \
        if report_uri and _exists(settings, report_uri) else []
    return {"kind": "rollback", "headline": f"live model rolled back {result['from']} -> {result['to']}",
            "fields": [("From", result["from"]), ("To", result["to"]), ("By", by), ("Why", reason),
                       ("Pointer", f"seq {result['seq']}")],
            "details_title": "", "details": [], "links": found,
            "actions": [(f"Undo: make {result['from']} live again",
                         f'feedloop model rollback --to {result["from"]} --reason "WHY"'),
                        ("Every pointer change, who and why", "feedloop model history")]}


def validation_actions(run: Run, failed_hours: list[int], previous: str | None, *,
                       excluded: bool = False) -> list[tuple[str, str | None]]:
    day = run.day
    actions: list[tuple[str, str | None]] = []
    for start, end in _hour_ranges(failed_hours) or [(0, 24)]:
        actions.append((
            f"Wrong or missing events that Kafka still holds (a producer bug, a sink outage): fix the cause, "
            f"re-ingest, then re-validate (Airflow run -> {run.task_id} -> Clear task)",
            f"feedloop ingest replay --start-time {_hour(day, start)} --end-time {_hour(day, end)}"))
    if failed_hours:
        conf = json.dumps({"accept_hours": failed_hours, "accept_reason": "WHY"})
        actions.append((
            f"The data is right (an expected change, a too-strict check): force-accept, recorded with your reason. "
            f"UI: {run.dag_id} -> Trigger -> Backfill {day} to {day}, reprocess failed runs, "
            f"accept_hours {failed_hours}, accept_reason. CLI",
            f"airflow backfill create --dag-id {run.dag_id} --from-date {day} --to-date {day} "
            f"--reprocess-behavior failed --dag-run-conf '{conf}'"))
    until = ("Until then these hours are left out of training (dataset.on_quarantined: exclude)" if excluded
             else "Until then training waits and the live model keeps serving")
    actions.append(_rollback_action(previous, f"{until}. If a live model was trained on bad data, roll back"))
    return actions


def blocked_actions(run: Run, exc: PromotionBlocked, previous: str | None) -> list[tuple[str, str | None]]:
    day = run.day
    if exc.check == "parity":
        return [("The ONNX export does not reproduce LightGBM: check the onnxmltools / onnxruntime versions and "
                 f"the feature manifest, then re-run from export (Airflow run -> export -> Clear task, downstream)",
                 None),
                ("The live model keeps serving; see it", "feedloop model list")]
    if exc.check == "canary":
        return [("Finish the running canary first", 'feedloop model promote-canary --reason "WHY"'),
                ("... or abort it", 'feedloop model abort-canary --reason "WHY"'),
                (f"then re-run the flip (Airflow run -> {run.task_id} -> Clear task)", None)]
    if exc.check == "approval":
        return [(f"Ask again: Airflow run -> approve -> Clear task (downstream), then answer in the run's "
                 f"Required actions before the timeout", None),
                ("... or promote without approval, saying why: re-run the day with promotion_mode=force and a "
                 "force_reason", None)]
    conf = json.dumps({"gate_thresholds": {"tolerance": 0.01}})
    return [(f"Hold: nothing to do. {exc.champion or 'The live model'} keeps serving; tomorrow's run tries again. "
             "Read the model report first", None),
            ("Ship it anyway, gradually (after reading the report)",
             f'feedloop model canary {exc.version} --percent 10 --reason "WHY"'),
            (f"... or re-gate the day with thresholds you chose from the report (0.01 is only an example). UI: "
             f"{run.dag_id} -> Trigger -> Backfill {day} to {day}, reprocess failed runs, gate_thresholds. CLI",
             f"airflow backfill create --dag-id {run.dag_id} --from-date {day} --to-date {day} "
             f"--reprocess-behavior failed --dag-run-conf '{conf}'"),
            _rollback_action(previous, "If the live model itself is the problem, roll back")]


def task_actions(run: Run) -> list[tuple[str, str | None]]:
    if run.dag_id == "ingest_engagement":
        return [("Dead letters over ingest.max_bad_ratio: the run saved everything. Read the reasons in the "
                 f"dead-letter objects the error names (s3://<lake>/deadletter/engagement/{run.partition}/), fix "
                 "the producer; the next run goes on", None),
                ("If good events were dead-lettered (a too-tight ingest.max_lateness_hours), fix the setting and "
                 "re-ingest the day",
                 f"feedloop ingest replay --start-time {_hour(run.day, 0)} --end-time {_hour(run.day, 24)}"),
                ("Kafka or S3 unreachable: check the services, then Clear the task in the Airflow run",
                 "feedloop stack status")]
    return [("Read the task log, fix the cause, then re-run: Airflow run -> the failed task -> Clear task "
             "(or wait for the next scheduled run)", None)]


def _rollback_action(previous: str | None, text: str) -> tuple[str, str]:
    if previous:
        return (text, f'feedloop model rollback --to {previous} --reason "WHY"')
    return (text + " (pick VERSION from `feedloop model history`)", 'feedloop model rollback --to VERSION --reason "WHY"')


def failing_streaks(checks: set[str], earlier: Iterable[dict[str, Any] | None]) -> dict[str, int]:
    """Days each check has failed in a row, today included; `earlier` = summaries of D-1, D-2, ... (None: none)."""
    streak = dict.fromkeys(checks, 1)
    alive = set(checks)
    for summary in earlier:
        alive &= _failed_checks(summary) if summary else set()
        if not alive:
            break
        for check in alive:
            streak[check] += 1
    return streak


def _failed_checks(summary: dict[str, Any]) -> set[str]:
    """Checks that failed that day, in any hour (force-accepted hours too: the check still failed)."""
    found = [f["check"] for f in summary.get("day_failures", [])]
    found += [f["check"] for h in summary.get("hours", {}).values() for f in h.get("failures", [])]
    return set(found)


def _earlier_summaries(settings: Settings, bucket: str, day: date) -> Iterator[dict[str, Any] | None]:
    from feedloop.quality.status import summary_key  # lazy: feedloop.quality loads pyarrow (see for_failure)

    store = ObjectStore.from_settings(settings)
    for k in range(1, STREAK_DAYS):
        yield store.get_json(bucket, summary_key(day - timedelta(days=k)))  # type: ignore[misc]


def _hour_ranges(hours: list[int]) -> list[tuple[int, int]]:
    """[22, 23, 5] -> [(5, 6), (22, 24)]: contiguous [start, end) hour ranges."""
    ranges: list[tuple[int, int]] = []
    for h in sorted(hours):
        if ranges and ranges[-1][1] == h:
            ranges[-1] = (ranges[-1][0], h + 1)
        else:
            ranges.append((h, h + 1))
    return ranges


def _hour(day: date, hour: int) -> str:
    return (datetime.combine(day, time(), timezone.utc) + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M")


def _rollback_target(settings: Settings) -> str | None:
    """The version a rollback would return to (the live pointer's previous), if there is one."""
    live = ObjectStore.from_settings(settings).get_json(settings.s3.models_bucket, layout.RANKER_LIVE_KEY)
    return live.get("previous") if live else None  # type: ignore[union-attr]


def _read_uri(settings: Settings, uri: str) -> Any:
    bucket, key = uri[5:].split("/", 1)
    return ObjectStore.from_settings(settings).get_json(bucket, key)


def _exists(settings: Settings, uri: str) -> bool:
    from botocore.exceptions import ClientError

    bucket, key = uri[5:].split("/", 1)
    try:
        ObjectStore.from_settings(settings).client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error and its causes: a task body re-raises the library's error as AirflowFailException."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _content(run: Run, *, kind: str, headline: str, partitions: list[str], details_title: str, details: list[str],
             failing_rows: int | None, failing_days: int, links: list[tuple[str, str]],
             actions: list[tuple[str, str | None]]) -> dict[str, Any]:
    since = run.day - timedelta(days=failing_days - 1)
    fields = [("DAG", run.dag_id), ("Task", run.task_id),
              ("Logical date", run.logical_date.isoformat() if run.logical_date else "none (manual run)"),
              ("Run", run.run_id), ("Partition", ", ".join(partitions))]
    if failing_rows is not None:
        fields.append(("Failing rows", str(failing_rows)))
    fields.append(("Failing for", f"{_days(failing_days)} in a row (since {since})"))
    return {"dag_id": run.dag_id, "check": run.task_id, "partition": run.partition, "day": run.day.isoformat(),
            "kind": kind, "headline": headline, "run_id": run.run_id, "run_url": run.run_url,
            "fields": fields, "details_title": details_title, "details": details, "links": links,
            "actions": actions, "failing_rows": failing_rows, "failing_days": failing_days}


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"
