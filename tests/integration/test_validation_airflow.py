"""`airflow dags test retrain_ranker` against the embedded S3, with real Slack and SMTP receivers.

The alerts travel the production path: the validate task opens the day's data incidents (with
dataset.on_quarantined: exclude the run goes on without the quarantined hours), the providers'
Slack webhook and SMTP hooks read their Connections from AIRFLOW_CONN_* and deliver to a plain
http.server and an aiosmtpd server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from datetime import date, datetime, timedelta, timezone
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from feedloop import quality
from feedloop.core.layout import HourPartition
from feedloop.quality import status
from feedloop.ops.stack import airflow_env
from feedloop.core.process import free_port
from tests.support import lakedata

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

GOOD_DAY, BAD_DAY = date(2026, 11, 5), date(2026, 11, 6)


@pytest.fixture(scope="module")
def slack():
    """A Slack incoming-webhook stand-in: records every POST (path, JSON body)."""
    posts: list[tuple[str, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], posts
    server.shutdown()


@pytest.fixture(scope="module")
def smtp():
    from aiosmtpd.controller import Controller

    mails: list = []

    class Inbox:
        async def handle_DATA(self, _server, _session, envelope):  # noqa: N802 (aiosmtpd's naming)
            mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    controller = Controller(Inbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, mails
    controller.stop()


@pytest.fixture(scope="module")
def airflow(embedded, slack, smtp, tmp_path_factory):
    """Runs `airflow dags test` in a subprocess with this stack's env; returns (run, settings)."""
    from feedloop.core.storage import ObjectStore

    bucket = f"qaf-{uuid.uuid4().hex[:8]}"
    ObjectStore.from_settings(embedded).ensure_bucket(bucket)
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        **airflow_env(embedded),
        "AIRFLOW_HOME": str(home),
        "FEEDLOOP_S3__LAKE_BUCKET": bucket,
        # These runs have no earlier history: training skips (too few days) and the DAG tests validation.
        "FEEDLOOP_RETRAIN__START_DATE": GOOD_DAY.isoformat(),
        "FEEDLOOP_EVENTS__TENANTS": json.dumps(list(lakedata.TENANTS)),
        "AIRFLOW_CONN_FEEDLOOP_SLACK": json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack[0]}/hook",
                                                   "password": "T1/B1/X1"}),
        "AIRFLOW_CONN_FEEDLOOP_SMTP": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp[0],
                                                  "extra": {"disable_tls": True, "disable_ssl": True}}),
    }
    subprocess.run([_airflow(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)

    def run(day: date, conf: dict | None = None) -> subprocess.CompletedProcess:
        argv = [_airflow(), "dags", "test", "retrain_ranker", day.isoformat()]
        if conf:
            argv += ["-c", json.dumps(conf)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": bucket}),
        "events": embedded.events.model_copy(update={"tenants": lakedata.TENANTS}),
    })
    return run, settings


def _airflow() -> str:
    return str(Path(os.sys.executable).parent / "airflow")


def _window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def test_a_good_day_validates_in_the_dag_and_sends_nothing(airflow, store, slack, smtp):
    run, settings = airflow
    lakedata.write_good_day(store, settings.s3.lake_bucket, GOOD_DAY, (22, 23))
    done = run(GOOD_DAY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "validation of 2026-11-05 passed: report s3://" in done.stdout + done.stderr
    assert slack[1] == [] and smtp[1] == []
    assert quality.training_window(settings, *_window(GOOD_DAY), run_id="t").clean == [
        HourPartition(GOOD_DAY, 22), HourPartition(GOOD_DAY, 23)]


def test_a_bad_day_quarantines_and_alerts_once_then_force_accept_clears(airflow, store, slack, smtp):
    run, settings = airflow
    bucket = settings.s3.lake_bucket
    bad = lakedata.hour_events(BAD_DAY, 22)
    bad[0] = {**bad[0], "position": 0}
    lakedata.write(store, bucket, HourPartition(BAD_DAY, 22), lakedata.lake_table(bad))
    unusual = lakedata.hour_events(BAD_DAY, 23) + lakedata.hour_events(BAD_DAY, 23, tenants=("hooli",),
                                                                      surfaces=("feed",))
    lakedata.write(store, bucket, HourPartition(BAD_DAY, 23), lakedata.lake_table(unusual))

    done = run(BAD_DAY)
    assert done.returncode == 0, "dataset.on_quarantined: exclude - the run goes on without hour 22"
    assert "These hours are left out of training" in done.stdout + done.stderr

    assert len(slack[1]) == 2 and len(smtp[1]) == 2, (slack[1], smtp[1])
    warned = [text for _, b in slack[1] if ":warning:" in (text := b["text"])]
    assert len(warned) == 1 and "retrain_ranker.validate warns for 2026-11-06: validation warnings, 1 of 2" in warned[0]
    assert "dt=2026-11-06/hour=23 unknown_tenant_share" in warned[0] and "they are trained on" in warned[0]
    slack[1][:] = [p for p in slack[1] if ":warning:" not in p[1]["text"]]
    smtp[1][:] = [m for m in smtp[1] if " warns for " not in m[1]["Subject"]]
    path, body = slack[1][0]
    assert path == "/hook/T1/B1/X1"
    recipients, mail = smtp[1][0]
    assert recipients == ["ml-oncall@localhost"]
    assert mail["Subject"].startswith("[feedloop] retrain_ranker.validate failed for 2026-11-06: validation failed")
    email_body = mail.get_payload(0).get_payload(decode=True).decode() if mail.is_multipart() else mail.get_payload()
    report = f"s3://{bucket}/validation/dt=2026-11-06/index.html"
    for text in (body["text"], email_body):
        assert "DAG: retrain_ranker" in text
        assert "Logical date: 2026-11-06T00:00:00+00:00" in text
        assert ("dt=2026-11-06/hour=22 position_range: expect_column_values_to_be_between(position) "
                "expected min_value=1.0, max_value=200.0; observed 1 of 672 rows unexpected (0.15%), e.g. [0]") in text
        assert report in text
    assert store.get_json(bucket, status.quarantine_key(HourPartition(BAD_DAY, 22)))
    with pytest.raises(quality.WindowNotReady, match="hour=22: quarantined"):
        quality.training_window(settings, *_window(BAD_DAY), run_id="t")  # 1 of 2 hours clean < 80 %

    accepted = run(BAD_DAY, {"accept_hours": [22], "accept_reason": "one bad row from client 4.2; harmless"})
    assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
    assert len(slack[1]) == 2 and len(smtp[1]) == 2, ("the accepting run resolves the quarantine (one message "
                                                      "each); the warnings, seen again, post nothing", slack[1])
    assert "RESOLVED retrain_ranker.validate for 2026-11-06" in slack[1][1][1]["text"]
    hour = store.get_json(bucket, status.status_key(HourPartition(BAD_DAY, 22)))
    assert hour["state"] == "accepted" and hour["accepted"]["reason"] == "one bad row from client 4.2; harmless"
    assert quality.training_window(settings, *_window(BAD_DAY), run_id="t").clean
