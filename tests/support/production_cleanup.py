"""Leaving nothing behind after a production-profile stack (the production test and bench/validate_task.py)."""

from __future__ import annotations

import os
from pathlib import Path

from feedloop.core.config import Settings


def processes_of(state: Path) -> list[str]:
    """Processes whose environment names this stack's state folder (an orphan survives `down`)."""
    marker = f"FEEDLOOP_STATE_DIR={state}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and int(proc.name) != os.getpid():
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
                found.append(f"{proc.name}: {cmdline}")
        except (OSError, ValueError):
            continue
    return found


def drop(settings: Settings, database: str) -> None:
    """Drop the stack's metadata database and its Redis keys."""
    import psycopg2
    import redis
    from sqlalchemy.engine import make_url

    from feedloop.ops.stack import production

    url = make_url(settings.production.metadata_db_url)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    conn.close()
    broker = redis.Redis.from_url(settings.production.broker_url)
    keys = list(broker.scan_iter(match=f"{production.broker_key_prefix(settings)}*"))
    if keys:
        broker.delete(*keys)
