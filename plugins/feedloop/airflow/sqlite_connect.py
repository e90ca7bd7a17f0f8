"""Connect args for the embedded stack's SQLite metadata database (`[database] sql_alchemy_connect_args`).

Why: pysqlite waits 5 s for SQLite's write lock, then raises `database is locked`. On a busy laptop
(seen at load average ~18) the scheduler, triggerer and dag-processor of `airflow standalone` each hit
that and exited, and standalone does not restart its components: every later run waited forever. A
writer that waits longer is slower for a moment instead of dead. Only the embedded stack points Airflow
here; PostgreSQL's drivers take other arguments.
"""

from __future__ import annotations

BUSY_TIMEOUT_S = 120.0

SYNC: dict[str, object] = {"timeout": BUSY_TIMEOUT_S}    # sqlite3.connect(timeout=...): the busy handler's limit
ASYNC: dict[str, object] = {"timeout": BUSY_TIMEOUT_S}   # aiosqlite passes it on to sqlite3.connect
