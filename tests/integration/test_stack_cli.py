"""`feedloop stack up / status / down` end to end, with a real Airflow standalone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import stack_environ

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _feedloop(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "feedloop.ops.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _alive(pid: int) -> bool:
    """Running and not a zombie (a container's pid 1 may never reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_using(state_dir: str) -> list[int]:
    """Live processes whose environment points into this stack's state folder."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if state_dir.encode() in environ.read_bytes() and _alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("cli-stack")
    environ = {**os.environ, **stack_environ(state, airflow=True)}
    yield environ
    _feedloop(environ, "stack", "down")


def test_up_status_down_end_to_end(env):
    up = _feedloop(env, "stack", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    for title in ("S3 (SeaweedFS)", "Kafka (Tansu)", "Airflow (standalone)"):
        assert f"{title}" in up.stdout
    assert "simple_auth_manager_passwords.json.generated" in up.stdout

    again = _feedloop(env, "stack", "up")  # idempotent: nothing restarted
    assert again.returncode == 0 and "already running" in again.stdout

    status = _feedloop(env, "-o", "json", "stack", "status")
    assert status.returncode == 0, status.stderr
    services = json.loads(status.stdout)
    assert [s["name"] for s in services] == ["s3", "kafka", "airflow"]
    assert all(s["running"] and s["ready"] for s in services)
    pids = [s["pid"] for s in services]

    import httpx

    airflow_url = services[2]["details"]["ui"]
    assert httpx.get(f"{airflow_url}/api/v2/monitor/health", timeout=5).status_code == 200

    down = _feedloop(env, "stack", "down")
    assert down.returncode == 0
    assert not any(_alive(pid) for pid in pids)
    after = json.loads(_feedloop(env, "-o", "json", "stack", "status").stdout)
    assert not any(s["running"] for s in after)
    # Nothing of the Airflow process group is left behind (scheduler, api-server, ...).
    assert _processes_using(env["FEEDLOOP_STATE_DIR"] + "/airflow") == []


def test_port_in_use_is_one_clear_line_and_nothing_is_left_behind(env):
    kafka_port = int(env["FEEDLOOP_STACK__KAFKA_PORT"])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", kafka_port))
    blocker.listen()
    try:
        result = _feedloop(env, "stack", "up")
    finally:
        blocker.close()
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "Kafka (Tansu)" in line and str(kafka_port) in line and "FEEDLOOP_STACK__KAFKA_PORT" in line
    assert "kafka.log" in line
    status = json.loads(_feedloop(env, "-o", "json", "stack", "status").stdout)
    assert not any(s["running"] for s in status), "the S3 started before the failure must be torn down"
    assert Path(env["FEEDLOOP_STATE_DIR"], "logs", "s3.log").exists()
