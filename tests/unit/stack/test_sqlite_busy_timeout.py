"""The embedded stack's Airflow waits for SQLite's write lock instead of dying on `database is locked`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from feedloop.core.config import load_settings
from feedloop.ops.stack import production
from feedloop.ops.stack.services import airflow_env

_WRITE = """
import time
from airflow import settings
print("writing", flush=True)
start = time.monotonic()
with settings.engine.begin() as c:
    c.exec_driver_sql("CREATE TABLE feedloop_probe (x INTEGER)")
print(f"waited {time.monotonic() - start:.1f}", flush=True)
"""


def test_an_airflow_process_waits_past_pysqlites_5_s_for_a_held_write_lock(tmp_path):
    settings = load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path)})
    db = tmp_path / "airflow.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")  # what a busy scheduler's long write looks like to everyone else
    env = {**os.environ, **airflow_env(settings), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}"}
    proc = subprocess.Popen([sys.executable, "-c", _WRITE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        time.sleep(6.5)  # past pysqlite's default 5 s busy timeout
        holder.execute("COMMIT")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        holder.close()
    assert proc.returncode == 0, err[-2000:]
    assert float(out.split()[-1]) >= 6.0


def test_the_production_profile_does_not_hand_sqlite_args_to_postgresql(tmp_path):
    settings = load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path)})
    env = production.production_env(settings)
    assert not [n for n in env if n.startswith("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")]
