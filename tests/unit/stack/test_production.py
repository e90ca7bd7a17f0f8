"""The production profile's pure parts: database URL, broker isolation, secrets in output, process trees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from feedloop.core.config import load_settings
from feedloop.ops.stack import production
from feedloop.core.process import ManagedProcess, StackError
from feedloop.ops.stack import services


def _settings(tmp_path, **env: str):
    return load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path), **env})


def test_the_metadata_db_url_gets_the_psycopg2_driver_and_keeps_a_password(tmp_path):
    settings = _settings(tmp_path, FEEDLOOP_PRODUCTION__METADATA_DB_URL="postgresql://ops:pw@db:5433/airflow")
    assert production.metadata_db_url(settings) == "postgresql+psycopg2://ops:pw@db:5433/airflow"


@pytest.mark.parametrize("url", [
    pytest.param("sqlite:////tmp/airflow.db", id="not-postgresql"),
    pytest.param("postgresql://postgres@127.0.0.1:5432", id="no-database"),
])
def test_a_metadata_db_url_that_is_not_a_postgresql_database_is_one_clear_error(tmp_path, url):
    settings = _settings(tmp_path, FEEDLOOP_PRODUCTION__METADATA_DB_URL=url)
    with pytest.raises(StackError, match="FEEDLOOP_PRODUCTION__METADATA_DB_URL"):
        production.metadata_db_url(settings)


def test_two_stacks_on_one_redis_never_share_celery_keys(tmp_path):
    a = _settings(tmp_path, FEEDLOOP_PRODUCTION__METADATA_DB_URL="postgresql://p@h/feedloop_a")
    b = _settings(tmp_path, FEEDLOOP_PRODUCTION__METADATA_DB_URL="postgresql://p@h/feedloop_b")
    assert production.broker_key_prefix(a) == "feedloop_a:" != production.broker_key_prefix(b)
    env = production.production_env(a)
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == "feedloop_a:"


def test_status_never_shows_a_broker_or_database_password(tmp_path):
    settings = _settings(tmp_path, FEEDLOOP_PRODUCTION__BROKER_URL="redis://:brokerpw@redis:6379/0",
                         FEEDLOOP_PRODUCTION__METADATA_DB_URL="postgresql://ops:dbpw@db/airflow")
    shown = str(production.ApiServer(settings).describe())
    assert "brokerpw" not in shown and "dbpw" not in shown and "redis://:***@redis:6379/0" in shown


def test_every_component_shares_one_set_of_keys_kept_in_the_state_folder(tmp_path):
    settings = _settings(tmp_path, FEEDLOOP_STACK__PROFILE="production")
    envs = [s.env() for s in services(settings) if isinstance(s, production.AirflowComponent)]
    assert len(envs) == 6  # api-server, scheduler, dag-processor, triggerer, 2 workers
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert len({env[key] for env in envs}) == 1, key
    assert len(envs[0]["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64  # HS512
    home = production.airflow_home(settings)
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in home.glob(".*") if p.is_file())
    workers = {env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] for env in envs if "CELERY_WORKER_NAME" in env}
    assert len(workers) == 2


def test_the_admin_password_is_created_once_and_kept(tmp_path):
    settings = _settings(tmp_path)
    first = production.admin_password(settings)
    assert production.admin_password(settings) == first and len(first) >= 16
    assert oct(production.password_file(settings).stat().st_mode)[-3:] == "600"


def test_a_connection_set_by_the_operator_wins_over_the_generated_one(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_FEEDLOOP_S3", '{"conn_type": "aws", "login": "mine"}')
    env = production.production_env(settings)
    assert "AIRFLOW_CONN_FEEDLOOP_S3" not in env and "AIRFLOW_CONN_FEEDLOOP_KAFKA" in env


def test_the_process_tree_includes_children_in_their_own_process_groups():
    # a parent that starts a child in a new session (as Airflow's supervisor does with task runners)
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], " \
           "start_new_session=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        import time

        deadline = time.monotonic() + 10
        groups = production.process_tree_groups(parent.pid)
        while len(groups) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            groups = production.process_tree_groups(parent.pid)
        assert parent.pid in groups and len(groups) == 2
    finally:
        for pgid in production.process_tree_groups(parent.pid):
            os.killpg(pgid, signal.SIGKILL)
        parent.wait()


def test_stopping_a_worker_process_stops_its_task_runners(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], " \
           "start_new_session=True); time.sleep(60)"
    worker = production.WorkerProcess("airflow-worker-1", [sys.executable, "-c", code], tmp_path, tmp_path)
    pid = worker.start()
    import time

    deadline = time.monotonic() + 10
    while len(production.process_tree_groups(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    groups = production.process_tree_groups(pid)
    assert len(groups) == 2
    assert worker.stop(timeout=5)
    deadline = time.monotonic() + 5
    while _live_members(groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live_members(groups)


def _live_members(groups: set[int]) -> list[int]:
    """Processes of these groups that are still running (zombies waiting to be reaped do not count)."""
    from pathlib import Path

    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) in groups:
            live.append(int(stat.parent.name))
    return live


def test_the_running_profile_is_read_from_the_recorded_pids(tmp_path):
    settings = _settings(tmp_path)
    assert production.running_profile(settings) is None
    proc = ManagedProcess("airflow-scheduler", [sys.executable, "-c", "import time; time.sleep(30)"],
                          tmp_path / "run", tmp_path / "logs")
    proc.start()
    try:
        assert production.running_profile(settings) == "production"
    finally:
        proc.stop()
    assert production.running_profile(settings) is None
