"""Alerts as incidents, end to end, with real receivers and a real Airflow api-server for the run links.

`airflow dags test` fails the real tasks; Airflow calls feedloop's failure / success callbacks, which
keep the incident in S3 and deliver through the providers' Slack webhook and SMTP hooks to a plain
http.server and an aiosmtpd server. Every link in a message is fetched as a logged-in operator and
must answer 200 (the feedloop pages refuse a request without the Airflow login).
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote

import httpx
import pytest

from feedloop import quality
from feedloop.promotion import gate
from feedloop.alerts import incidents
from feedloop.ops.airflow_api import AirflowApi
from feedloop.core.config import repo_root
from feedloop.core.layout import HourPartition
from feedloop.promotion.registry import Registry
from feedloop.ops.stack import airflow_env
from feedloop.core.process import free_port
from tests.support import lakedata
from tests.integration.test_validation_airflow import slack, smtp  # noqa: F401 - the receivers, reused

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

EARLIER, DAY, GATE_DAY = date(2026, 11, 5), date(2026, 11, 6), date(2026, 11, 7)
INCIDENT = incidents.key("retrain_ranker", "validate", f"dt={DAY}")


@pytest.fixture(scope="module")
def airflow(embedded, slack, smtp, tmp_path_factory):  # noqa: F811 - pytest fixtures by name
    """A migrated Airflow home, an api-server on it, and `airflow dags test` with this stack's env."""
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(embedded)
    lake, models = f"alerts-{uuid.uuid4().hex[:8]}", f"alertm-{uuid.uuid4().hex[:8]}"
    for bucket in (lake, models):
        store.ensure_bucket(bucket)
    tmp = tmp_path_factory.mktemp("alerts")
    dags = tmp / "dags"
    dags.mkdir()
    (dags / "retrain_ranker.py").symlink_to(repo_root() / "dags" / "retrain_ranker.py")
    (dags / "alert_gate_check.py").symlink_to(Path(__file__).parents[1] / "support" / "alert_dag.py")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ, **airflow_env(embedded),
        "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": base,
        "FEEDLOOP_S3__LAKE_BUCKET": lake, "FEEDLOOP_S3__MODELS_BUCKET": models,
        "FEEDLOOP_RETRAIN__START_DATE": DAY.isoformat(),  # no history before DAY: the runs test validation only
        "FEEDLOOP_EVENTS__TENANTS": json.dumps(list(lakedata.TENANTS)),
        # refuse: a quarantined hour fails validate and alerts through the on_failure_callback (the
        # default, exclude, goes on and alerts from the task: tests/integration/test_validation_airflow.py)
        "FEEDLOOP_DATASET__ON_QUARANTINED": "refuse",
        "AIRFLOW_CONN_FEEDLOOP_SLACK": json.dumps({"conn_type": "slackwebhook", "password": "T1/B1/X1",
                                                   "host": f"http://127.0.0.1:{slack[0]}/hook"}),
        "AIRFLOW_CONN_FEEDLOOP_SMTP": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp[0],
                                                  "extra": {"disable_tls": True, "disable_ssl": True}}),
    }
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow_bin, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = (tmp / "api-server.log").open("wb")
    server = subprocess.Popen([airflow_bin, "api-server", "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(base, server, tmp / "api-server.log")

        def run(dag_id: str, day: date, conf: dict | None = None) -> subprocess.CompletedProcess:
            argv = [airflow_bin, "dags", "test", dag_id, day.isoformat()] + (["-c", json.dumps(conf)] if conf else [])
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

        settings = embedded.model_copy(update={
            "s3": embedded.s3.model_copy(update={"lake_bucket": lake, "models_bucket": models}),
            "events": embedded.events.model_copy(update={"tenants": lakedata.TENANTS}),
            "dataset": embedded.dataset.model_copy(update={"on_quarantined": "refuse"})})
        api = AirflowApi.for_standalone(base, tmp / "airflow" / "simple_auth_manager_passwords.json.generated")
        yield SimpleNamespace(run=run, settings=settings, base=base, env=env, api=api,
                              registry=Registry(store, models))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _wait_healthy(base: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"airflow api-server exited {server.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"airflow api-server not healthy after {timeout}s: {log.read_text()[-3000:]}")


def _slack(post: tuple[str, dict]) -> tuple[str, list[tuple[str, str]]]:
    """Slack text with entities undone, and its <url|label> links as (label, url)."""
    text = post[1]["text"]
    found = [(label, html.unescape(url)) for label, url in re.findall(r"^(.+?): <([^|>]+)\|open>$", text, re.M)]
    return html.unescape(text), found


def _email(mail) -> tuple[str, list[str]]:
    """The email's HTML as text (tags kept, entities undone) and its hrefs."""
    body = (mail.get_payload(0) if mail.is_multipart() else mail).get_payload(decode=True).decode()
    return html.unescape(body), [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)]


def _bad_hour(store, bucket: str, day: date) -> None:
    rows = lakedata.hour_events(day, 22)
    rows[0] = {**rows[0], "position": 0}
    lakedata.write(store, bucket, HourPartition(day, 22), lakedata.lake_table(rows))
    lakedata.write_good_day(store, bucket, day, (23,))


def _register(registry: Registry, version: str, *, promotable: bool = True) -> None:
    registry.register(version=version, files={"model.txt": version.encode(), "model.onnx": b"onnx:" + version.encode(),
                                              "report.html": f"<html>report of {version}</html>".encode()},
                      manifest={"feature_manifest": {"features": []}, "lineage": {}, "params": {},
                                "parity": {"passed": True, "max_abs_diff": 1e-7}, "metrics": {"auc": 0.7},
                                "gate": {"promotable": promotable, "champion": None, "summary": "-"}})


def test_a_failed_validation_is_one_incident_a_retry_updates_it_and_a_recovery_resolves_it(airflow, store, slack,
                                                                                           smtp):  # noqa: F811
    bucket = airflow.settings.s3.lake_bucket
    _bad_hour(store, bucket, EARLIER)  # the same check failed the day before: "failing 2 days"
    with pytest.raises(quality.ValidationFailed):
        quality.validate_day(airflow.settings, EARLIER)
    _bad_hour(store, bucket, DAY)

    failed = airflow.run("retrain_ranker", DAY)
    assert failed.returncode != 0
    assert len(slack[1]) == 1 and len(smtp[1]) == 1, (slack[1], smtp[1])
    (path, _), (recipients, mail) = slack[1][0], smtp[1][0]
    assert path == "/hook/T1/B1/X1" and recipients == ["ml-oncall@localhost"]
    text, slack_links = _slack(slack[1][0])
    body, hrefs = _email(mail)
    subject = ("[feedloop] retrain_ranker.validate failed for 2026-11-06: validation failed, "
               "1 of 2 hour partition(s) quarantined")
    assert mail["Subject"] == subject and text.startswith(f":rotating_light: *{subject}*")
    for message in (text, body):
        for fact in (
            "DAG: retrain_ranker", "Task: validate", "Logical date: 2026-11-06T00:00:00+00:00",
            "Partition: dt=2026-11-06/hour=22",
            "dt=2026-11-06/hour=22 position_range: expect_column_values_to_be_between(position) expected "
            "min_value=1.0, max_value=200.0; observed 1 of 672 rows unexpected (0.15%), e.g. [0]; column position; "
            "failing rows 1; failing 2 days in a row (since 2026-11-05)",
            "Failing rows: 1", "Failing for: 2 days in a row (since 2026-11-05)",
            f"Report: s3://{bucket}/validation/dt=2026-11-06/index.html",
            "feedloop ingest replay --start-time 2026-11-06T22:00 --end-time 2026-11-06T23:00",
            "airflow backfill create --dag-id retrain_ranker --from-date 2026-11-06 --to-date 2026-11-06 "
            "--reprocess-behavior failed --dag-run-conf '{\"accept_hours\": [22], \"accept_reason\": \"WHY\"}'",
            'feedloop model rollback --to VERSION --reason "WHY"',
        ):
            assert fact in message, (fact, message)
    labels = [label for label, _ in slack_links]
    assert labels == ["Data Docs dt=2026-11-06/hour=22 (rows)", "Validation report dt=2026-11-06 (all hours)",
                      "Airflow run"]
    assert hrefs == [url for _, url in slack_links]
    auth = {"Authorization": airflow.api.http.headers["Authorization"]}  # an operator logged in to Airflow
    assert httpx.get(slack_links[0][1], timeout=30).status_code == 401, "Data Docs sit behind Airflow's login"
    docs, index, run_link = (httpx.get(url, headers=auth, timeout=30) for _, url in slack_links)
    assert docs.status_code == 200 and "Great Expectations" in docs.text and "position" in docs.text
    assert index.status_code == 200 and "hour=22/rows.html" in index.text
    assert run_link.status_code == 200
    run_id = unquote(slack_links[2][1].rsplit("/runs/", 1)[1])
    assert slack_links[2][1] == f"{airflow.base}/dags/retrain_ranker/runs/{quote(run_id, safe='')}"
    assert airflow.api.dag_run("retrain_ranker", run_id)["state"] == "failed"  # the link names a real run

    retried = airflow.run("retrain_ranker", DAY)
    assert retried.returncode != 0
    assert len(slack[1]) == 1 and len(smtp[1]) == 1, "a retry updates the incident, it does not post again"
    record = store.get_json(bucket, INCIDENT)
    assert record["state"] == "open" and record["count"] == 2 and all(record["delivered"].values())

    lakedata.write(store, bucket, HourPartition(DAY, 22), lakedata.lake_table(lakedata.hour_events(DAY, 22)))
    fixed = airflow.run("retrain_ranker", DAY)
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr[-3000:]
    assert len(slack[1]) == 2 and len(smtp[1]) == 2, "one resolved message on each channel"
    resolved, resolved_links = _slack(slack[1][1])
    assert resolved.startswith(":white_check_mark: *[feedloop] RESOLVED retrain_ranker.validate for 2026-11-06*")
    assert "Failed 2 time(s) from" in resolved and "Was: validation failed, 1 of 2" in resolved
    assert httpx.get(resolved_links[0][1], headers=auth, timeout=30).status_code == 200
    reply = smtp[1][1][1]
    assert reply["Subject"] == f"Re: {subject}" and reply["In-Reply-To"] == mail["Message-ID"]
    assert store.get_json(bucket, INCIDENT)["state"] == "resolved"


def test_a_gate_block_alerts_once_with_the_failed_checks_and_the_report(airflow, store, slack, smtp):  # noqa: F811
    champion, candidate = "2026-11-06-c0ffee", "2026-11-07-bad0ff"
    _register(airflow.registry, champion)
    airflow.registry.flip(version=champion, by="test", reason="first")
    _register(airflow.registry, candidate, promotable=False)
    def debiased(value: float) -> dict:
        return {"overall": {"lists": 300, "ndcg@10": {"value": value}}, "segments": {}}

    decision = gate.decide(
        {"version": candidate, "overall": {"auc": 0.61, "ndcg@10": 0.41, "groups": 300}, "segments": {},
         "debiased": debiased(0.45), "parity": {"max_abs_diff": 1e-7, "rows": 100}},
        {"version": champion, "overall": {"auc": 0.70, "ndcg@10": 0.41, "groups": 300}, "debiased": debiased(0.54)},
        gate.Thresholds(floors={"auc": 0.55}),
        paired={"confidence": 0.95, "debiased": {"overall": {
            "lists": 300, "ndcg@10": {"value": -0.09, "low": -0.12, "high": -0.06}}, "segments": {}}})
    models = airflow.settings.s3.models_bucket
    gate_key = f"ranker/runs/{GATE_DAY}/candidates/{candidate}/gate.json"
    store.put_json(models, gate_key, decision.to_dict())
    before = len(slack[1]), len(smtp[1])

    done = airflow.run("alert_gate_check", GATE_DAY, {"gate": {
        "version": candidate, "promotable": False, "champion": champion, "summary": decision.summary(),
        "gate_uri": f"s3://{models}/{gate_key}"}})
    assert done.returncode != 0
    assert (len(slack[1]), len(smtp[1])) == (before[0] + 1, before[1] + 1)
    text, found = _slack(slack[1][-1])
    body, hrefs = _email(smtp[1][-1][1])
    for message in (text, body):
        for fact in ("gate blocked, candidate 2026-11-07-bad0ff blocked; champion 2026-11-06-c0ffee stays live",
                     "ndcg@10 in overall regressed: candidate 0.45 vs champion 0.54 (snips-ipw debiased; diff -0.0900, "
                     "95% CI [-0.1200, -0.0600] over 300 lists; allowed down to -0.0050)", "Partition: dt=2026-11-07",
                     "Failing for: 1 day in a row",
                     'feedloop model canary 2026-11-07-bad0ff --percent 10 --reason "WHY"'):
            assert fact in message, (fact, message)
    assert [label for label, _ in found] == [f"Model report {candidate}", "Airflow run"] and hrefs == [
        url for _, url in found]
    auth = {"Authorization": airflow.api.http.headers["Authorization"]}
    report, run_page = (httpx.get(url, headers=auth, timeout=30) for _, url in found)
    assert report.status_code == 200 and f"report of {candidate}" in report.text
    assert run_page.status_code == 200
    assert airflow.registry.live().version == champion


def test_a_rollback_from_the_cli_sends_one_informational_message(airflow, store, slack, smtp):  # noqa: F811
    for version in ("2026-11-05-aaaaaa", "2026-11-06-bbbbbb"):
        _register(airflow.registry, version)
        airflow.registry.flip(version=version, by="retrain_ranker", reason="gate passed")
    before = len(slack[1]), len(smtp[1])

    out = subprocess.run([sys.executable, "-m", "feedloop.ops.cli", "-o", "json", "model", "rollback", "--reason",
                          "CTR fell 20% after the flip"], env=airflow.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert (result["from"], result["to"]) == ("2026-11-06-bbbbbb", "2026-11-05-aaaaaa")
    assert result["alerted"] == {"slack": "sent", "email": "sent"}
    assert (len(slack[1]), len(smtp[1])) == (before[0] + 1, before[1] + 1)
    text, found = _slack(slack[1][-1])
    body, _ = _email(smtp[1][-1][1])
    assert smtp[1][-1][1]["Subject"] == "[feedloop] live model rolled back 2026-11-06-bbbbbb -> 2026-11-05-aaaaaa"
    for message in (text, body):
        for fact in ("From: 2026-11-06-bbbbbb", "To: 2026-11-05-aaaaaa", "By: cli ", "Why: CTR fell 20% after the flip",
                     'feedloop model rollback --to 2026-11-06-bbbbbb --reason "WHY"'):
            assert fact in message, (fact, message)
    auth = {"Authorization": airflow.api.http.headers["Authorization"]}
    report = httpx.get(found[0][1], headers=auth, timeout=30)
    assert report.status_code == 200 and "report of 2026-11-05-aaaaaa" in report.text
