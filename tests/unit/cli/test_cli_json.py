"""`feedloop ... -o json` for every subcommand: stdout is exactly one JSON document, exit codes as documented.

Each command runs as its own process (`python -m feedloop.ops.cli`), as a script would run it, against
the session's embedded S3 and Kafka: a lake with one validated and one quarantined day, a registry
with two versions (the second live) and a fresh topic.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import date

import httpx
import pytest

from feedloop import quality
from feedloop.core.layout import HourPartition
from feedloop.promotion.registry import Registry
from feedloop.core.process import free_port
from tests.conftest import stack_environ
from tests.support import lakedata

pytestmark = pytest.mark.integration

GOOD, BAD = date(2026, 11, 5), date(2026, 11, 6)
V1, V2 = "2026-11-05-111111", "2026-11-06-222222"
OK, ERROR, USAGE, CHECK_FAILED = 0, 1, 2, 3


@pytest.fixture(scope="module")
def env(embedded, tmp_path_factory) -> dict[str, str]:
    from feedloop.core.storage import ObjectStore
    from feedloop.core.streams import ensure_topic

    store = ObjectStore.from_settings(embedded)
    lake, models, topic = f"cli-{uuid.uuid4().hex[:8]}", f"clim-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    for bucket in (lake, models):
        store.ensure_bucket(bucket)
    ensure_topic(embedded.kafka, topic=topic, partitions=embedded.kafka.partitions)
    settings = embedded.model_copy(update={"s3": embedded.s3.model_copy(update={"lake_bucket": lake}),
                                           "events": embedded.events.model_copy(update={"tenants": lakedata.TENANTS})})
    lakedata.write_good_day(store, lake, GOOD, (22, 23))
    quality.validate_day(settings, GOOD)
    bad = lakedata.hour_events(BAD, 22)
    bad[0] = {**bad[0], "position": 0}
    lakedata.write(store, lake, HourPartition(BAD, 22), lakedata.lake_table(bad))
    lakedata.write_good_day(store, lake, BAD, (23,))
    with pytest.raises(quality.ValidationFailed):
        quality.validate_day(settings, BAD)
    registry = Registry(store, models)
    for version in (V1, V2):
        registry.register(version=version, files={"model.txt": version.encode(), "model.onnx": version.encode()},
                          manifest={"feature_manifest": {"features": []}, "lineage": {}, "params": {},
                                    "parity": {"passed": True, "max_abs_diff": 1e-7},
                                    "metrics": {"auc": 0.7, "ndcg@10": 0.4},
                                    "gate": {"promotable": True, "champion": None, "summary": "passed"}})
        registry.flip(version=version, by="test", reason="setup")
    return {**os.environ, "FEEDLOOP_S3__LAKE_BUCKET": lake, "FEEDLOOP_S3__MODELS_BUCKET": models,
            "FEEDLOOP_KAFKA__TOPIC": topic, "FEEDLOOP_EVENTS__TENANTS": json.dumps(list(lakedata.TENANTS)),
            "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-home"))}


def feedloop(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedloop.ops.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


CASES = [
    pytest.param(("stack", "status"), OK, id="stack-status"),
    pytest.param(("stack", "up"), OK, id="stack-up-already-running"),
    pytest.param(("simulate", "--start", "2026-11-01", "--days", "1", "--events-per-day", "300"), OK, id="simulate"),
    pytest.param(("ingest", "run"), OK, id="ingest-run"),
    pytest.param(("ingest", "replay", "--start-time", "2026-11-01T00:00", "--end-time", "2026-11-01T02:00"), OK,
                 id="ingest-replay"),
    pytest.param(("ingest", "replay", "--start-time", "2026-11-01T00:00"), USAGE, id="ingest-replay-half-a-range"),
    pytest.param(("model", "list"), OK, id="model-list"),
    pytest.param(("model", "show", V2), OK, id="model-show"),
    pytest.param(("model", "show", "2030-01-01-000000"), ERROR, id="model-show-unknown"),
    pytest.param(("model", "history"), OK, id="model-history"),
    pytest.param(("model", "rollback", "--to", V1, "--dry-run"), OK, id="model-rollback-dry-run"),
    pytest.param(("model", "rollback", "--to", V1), USAGE, id="model-rollback-without-reason"),
    pytest.param(("model", "canary", V1, "--percent", "10", "--dry-run"), OK, id="model-canary-dry-run"),
    pytest.param(("model", "promote-canary", "--dry-run"), ERROR, id="model-promote-canary-none-running"),
    pytest.param(("model", "abort-canary", "--dry-run"), ERROR, id="model-abort-canary-none-running"),
    pytest.param(("data", "status", "--day", str(GOOD)), OK, id="data-status-validated"),
    pytest.param(("data", "status", "--day", str(BAD)), CHECK_FAILED, id="data-status-quarantined"),
    pytest.param(("data", "status"), USAGE, id="data-status-without-day"),
]


@pytest.mark.parametrize("args, code", CASES)
def test_every_command_writes_only_json_to_stdout(env, args, code):
    done = feedloop(env, *args, "-o", "json")
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)  # the whole of stdout is one JSON document
    if code in (ERROR, USAGE):
        assert doc["exit_code"] == code and doc["error"], doc
    if code == CHECK_FAILED:  # the result itself, saying what failed
        assert doc["failed"] is True, doc
    assert "%|" not in done.stderr, "no progress bar when stderr is not a terminal"


def test_json_before_the_subcommand_and_what_the_documents_say(env):
    rollback = json.loads(feedloop(env, "-o", "json", "model", "rollback", "--to", V1, "--dry-run").stdout)
    assert rollback["dry_run"] and (rollback["from"], rollback["to"]) == (V2, V1)
    assert rollback["diff"]["version"] == {"from": V2, "to": V1}
    history = json.loads(feedloop(env, "-o", "json", "model", "history").stdout)
    assert [(h["from"], h["to"]) for h in history] == [(None, V1), (V1, V2)]
    status = json.loads(feedloop(env, "-o", "json", "data", "status", "--day", str(BAD)).stdout)
    hours = {h["hour"]: h for h in status["hours"]}
    assert (hours[22]["state"], hours[23]["state"], hours[0]["state"]) == ("quarantined", "validated", "missing")
    assert "position_range" in hours[22]["why"] and status["failed"] is True


def test_data_status_text_lists_every_hour_and_exits_3_on_a_quarantined_hour(env):
    done = feedloop(env, "data", "status", "--day", str(BAD))
    assert done.returncode == CHECK_FAILED
    lines = done.stdout.splitlines()
    assert lines[0].startswith("2026-11-06: validated at ") and ": failed (report s3://" in lines[0]
    assert len([line for line in lines if line.startswith("  ") and line[2:4].isdigit()]) == 24
    assert any(line.startswith("  22    quarantined") and "position_range" in line for line in lines)


def test_stack_down_with_nothing_running_is_json(env, tmp_path):
    done = feedloop({**env, **stack_environ(tmp_path)}, "stack", "down", "-o", "json")
    assert done.returncode == OK, done.stderr
    assert all(not s["running"] for s in json.loads(done.stdout))


def test_serve_reports_its_pods_as_json_when_stopped(env):
    port = free_port()
    pod = subprocess.Popen([sys.executable, "-m", "feedloop.ops.cli", "serve", "--port", str(port), "-o", "json"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        pod.send_signal(signal.SIGTERM)
        out, err = pod.communicate(timeout=60)
    finally:
        pod.kill()
    assert pod.returncode == OK, err[-3000:]
    assert json.loads(out)["stopped"] == [f"http://127.0.0.1:{port}"]


def test_demo_that_cannot_start_its_stack_reports_the_error_as_json(env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        environ = {**env, **stack_environ(tmp_path), "FEEDLOOP_STACK__S3_PORT": str(taken.getsockname()[1])}
        done = feedloop(environ, "-o", "json", "demo", "--days", "1")
    assert done.returncode == ERROR, done.stdout + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert "already in use" in doc["error"] and doc["exit_code"] == ERROR
