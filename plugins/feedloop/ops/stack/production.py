"""The production profile of the stack: Airflow on PostgreSQL with the CeleryExecutor and a Redis broker.

Why: this is the shape Airflow runs in production (docker/, Kubernetes): a metadata database server,
a broker, and each component as its own process — api-server, scheduler, dag-processor, triggerer
and Celery workers that could live on other machines. `feedloop stack up --profile production`
runs that shape on one host under the same pid/process-group control as the embedded profile, so
CI exercises the real production configuration and `down` leaves nothing behind.

S3 and Kafka stay the embedded services (or any endpoints from config), exactly as in the default
profile. The API and UI require a login: Airflow's SimpleAuthManager with a password generated into
the state folder (never printed, never in the repo).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from feedloop.core.config import Settings
from feedloop.core.process import ManagedProcess, StackError
from feedloop.ops.airflow_api import AirflowApi
from feedloop.ops.stack.services import Service, airflow_env, settings_env, venv_bin

PROFILE = "production"
ADMIN = "admin"
_WORKER_NAME_ENV = "CELERY_WORKER_NAME"  # not FEEDLOOP_*: those are config overrides
_MIGRATE_TIMEOUT_S = 600
CELERY_CONFIG = "feedloop.airflow.celery_config.CELERY_CONFIG"  # Airflow's defaults + production.worker_preload


def airflow_home(settings: Settings) -> Path:
    """Its own AIRFLOW_HOME (logs, secrets, passwords): never mixed with the embedded profile's."""
    return settings.state_path / "airflow-production"


def password_file(settings: Settings) -> Path:
    return airflow_home(settings) / "simple_auth_manager_passwords.json.generated"


def admin_password(settings: Settings) -> str:
    """The admin password: random, created on first use, kept only in the state folder (mode 0600)."""
    import orjson

    path = password_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(orjson.dumps({ADMIN: secrets.token_urlsafe(18)}))
    return orjson.loads(path.read_bytes())[ADMIN]


def api(settings: Settings):
    """A logged-in client of this stack's REST API (what an operator or CI uses)."""
    return AirflowApi(f"http://127.0.0.1:{settings.stack.airflow_port}", ADMIN, admin_password(settings))


def metadata_db_url(settings: Settings) -> str:
    """SQLAlchemy URL of the metadata database (psycopg2 driver; a password may come from PGPASSWORD)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.production.metadata_db_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        raise StackError(f"production.metadata_db_url must be postgresql://USER@HOST:PORT/DATABASE, got "
                         f"{url.render_as_string(hide_password=True)!r}; fix it in include/config/feedloop.yaml "
                         f"or FEEDLOOP_PRODUCTION__METADATA_DB_URL")
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def broker_key_prefix(settings: Settings) -> str:
    """Celery's Redis keys are prefixed by the metadata database, so two stacks never share a queue."""
    from sqlalchemy.engine import make_url

    return f"{make_url(settings.production.metadata_db_url).database}:"


def ensure_database(settings: Settings) -> bool:
    """Create the metadata database if it is missing; True if it was created."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    url = make_url(metadata_db_url(settings))
    where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    try:
        conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise StackError(f"metadata DB: cannot connect to {where} ({str(exc).strip().splitlines()[0]}); start "
                         f"PostgreSQL or set FEEDLOOP_PRODUCTION__METADATA_DB_URL (password via PGPASSWORD)") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            except psycopg2.Error as exc:
                raise StackError(f"metadata DB: cannot create database {url.database!r} on {where} "
                                 f"({str(exc).strip()}); create it yourself or grant CREATEDB to "
                                 f"{url.username!r}") from None
            return True
    finally:
        conn.close()


def _state_secret(path: Path, *, fernet: bool = False) -> str:
    """A random key kept in the state folder (mode 0600, never in the repo), created on first use.

    64 random bytes: Airflow signs its JWTs with HS512, which wants a key of at least 64 bytes.
    """
    if not path.exists():
        from cryptography.fernet import Fernet

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(Fernet.generate_key() if fernet else secrets.token_urlsafe(64).encode())
    return path.read_text().strip()


def production_env(settings: Settings) -> dict[str, str]:
    """Environment shared by every component: one DB, one broker, one set of secrets."""
    cfg = settings.production
    home = airflow_home(settings)
    db = metadata_db_url(settings)
    env = airflow_env(settings)
    for name in [n for n in env if n.startswith("AIRFLOW_CONN_") and n in os.environ]:
        del env[name]  # a Connection the operator provides (env or secrets backend) wins over the generated one
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        "AIRFLOW__CELERY__BROKER_URL": cfg.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cfg.worker_concurrency),
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": broker_key_prefix(settings),
        # A task of a killed worker is recovered by Airflow's heartbeat timeout and retries; the broker
        # redelivers its unacknowledged message only after this long.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        # Every component signs or verifies with the same keys (Execution API tokens, log-server tokens).
        "AIRFLOW__API_AUTH__JWT_SECRET": _state_secret(home / ".jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _state_secret(home / ".api_secret_key"),
        "AIRFLOW__CORE__FERNET_KEY": _state_secret(home / ".fernet_key", fernet=True),  # Connections in the DB
        "AIRFLOW__API__WORKERS": str(cfg.api_workers),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(settings)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.stack.airflow_port + 2),
    })
    env.pop("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", None)  # set per worker
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
        env.pop(name)  # SQLite's busy timeout: PostgreSQL's drivers take other arguments
    return env


def _health(settings: Settings) -> dict[str, Any]:
    import httpx

    try:
        resp = httpx.get(f"http://127.0.0.1:{settings.stack.airflow_port}/api/v2/monitor/health", timeout=3)
        return resp.json() if resp.status_code == 200 else {}
    except Exception:  # noqa: BLE001 - not answering yet
        return {}


class AirflowComponent(Service):
    """One Airflow component as its own process; ready when Airflow's health endpoint says so."""

    component = ""          # the `airflow` sub-command
    health_key = ""         # its entry in /api/v2/monitor/health
    fix = "set FEEDLOOP_STACK__AIRFLOW_PORT to a free port"

    def argv(self) -> list[str]:
        return [str(venv_bin() / "airflow"), *self.component.split()]

    def env(self) -> dict[str, str]:
        return {**production_env(self.settings), **settings_env(self.settings)}

    def ports(self) -> list[int]:
        return []

    def ready(self) -> bool:
        return _health(self.settings).get(self.health_key, {}).get("status") == "healthy"

    def describe(self) -> dict[str, str]:
        return {"command": f"airflow {self.component}"}


class ApiServer(AirflowComponent):
    name = "airflow-api-server"
    title = "Airflow api-server"
    component = "api-server"
    health_key = "metadatabase"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.airflow_port}"

    def ports(self) -> list[int]:
        return [self.settings.stack.airflow_port]

    def prepare(self) -> None:
        """Before the first component starts: the database exists and is migrated, the login is set."""
        ensure_database(self.settings)
        admin_password(self.settings)
        log = self.process.log_file
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            try:
                done = subprocess.run([str(venv_bin() / "airflow"), "db", "migrate"], env={**os.environ, **self.env()},
                                      stdout=out, stderr=subprocess.STDOUT, timeout=_MIGRATE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise StackError(f"metadata DB: `airflow db migrate` took over {_MIGRATE_TIMEOUT_S}s; see {log}") from None
        if done.returncode != 0:
            raise StackError(f"metadata DB: `airflow db migrate` failed (exit {done.returncode}); see {log}")

    def describe(self) -> dict[str, str]:
        from sqlalchemy.engine import make_url

        db = make_url(metadata_db_url(self.settings)).render_as_string(hide_password=True)
        broker = make_url(self.settings.production.broker_url).render_as_string(hide_password=True)
        return {"ui": self.url, "login": f"{ADMIN} / password in {password_file(self.settings)}",
                "metadata": db, "executor": f"CeleryExecutor, broker {broker}"}


class Scheduler(AirflowComponent):
    name = "airflow-scheduler"
    title = "Airflow scheduler"
    component = "scheduler"
    health_key = "scheduler"


class DagProcessor(AirflowComponent):
    name = "airflow-dag-processor"
    title = "Airflow dag-processor"
    component = "dag-processor"
    health_key = "dag_processor"


class Triggerer(AirflowComponent):
    name = "airflow-triggerer"
    title = "Airflow triggerer"
    component = "triggerer"
    health_key = "triggerer"

    def ports(self) -> list[int]:
        return [self.settings.stack.airflow_port + 2]


def process_tree_groups(pid: int) -> set[int]:
    """Process groups of `pid` and all its descendants.

    Airflow's task supervisor puts every task runner in a process group of its own, so signalling
    a worker's group alone would leave its running tasks behind as orphans.
    """
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        groups[int(stat.parent.name)] = int(fields[2])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in groups:
            found.add(groups[p])
        todo.extend(children.get(p, []))
    return found


def _signal_groups(pgids: set[int], sig: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass


class WorkerProcess(ManagedProcess):
    """A Celery worker's process: stopping it stops the task runners it started too."""

    def stop(self, timeout: float = 20.0) -> bool:
        pid = self.pid()
        tasks = process_tree_groups(pid) - {pid} if pid else set()
        _signal_groups(tasks, signal.SIGTERM)  # a task runner fails its task instance on SIGTERM
        stopped = super().stop(timeout)
        _signal_groups(tasks, signal.SIGKILL)  # whatever outlived its worker
        return stopped


class CeleryWorker(AirflowComponent):
    """A Celery worker; ready when it answers a ping through the broker."""

    def __init__(self, settings: Settings, index: int, overrides: dict[str, str] | None = None):
        super().__init__(settings, dict(overrides or {}))
        self.index = index
        self.name = f"airflow-worker-{index}"
        self.title = f"Airflow celery worker {index}"
        self.worker = f"worker{index}"
        self.node = f"{self.worker}@{socket.gethostname()}"
        self.component = f"celery worker --celery-hostname {self.node}"

    @property
    def process(self) -> WorkerProcess:
        base = super().process
        return WorkerProcess(base.name, base.argv, base.run_dir, base.log_dir, base.env, base.cwd)

    @property
    def log_port(self) -> int:
        return self.settings.stack.airflow_port + 2 + self.index

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
            # Task instances record which worker ran them (on one host every worker has the same name).
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            _WORKER_NAME_ENV: self.worker,
            # Modules imported once before the pool starts: each task process is forked with them loaded.
            **({"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG} if self.settings.production.worker_preload
               else {}),
        }

    def ports(self) -> list[int]:
        return [self.log_port]

    def ready(self) -> bool:
        from celery import Celery

        app = Celery(broker=self.settings.production.broker_url, set_as_current=False)
        app.conf.broker_transport_options = {"global_keyprefix": broker_key_prefix(self.settings)}
        try:
            return bool(app.control.ping(destination=[self.node], timeout=1.0))
        except Exception:  # noqa: BLE001 - broker or worker not answering yet
            return False
        finally:
            app.close()

    def describe(self) -> dict[str, str]:
        return {"celery node": self.node, "hostname": f"{self.worker}.{socket.getfqdn()}",
                "log server": str(self.log_port)}


def worker_hostname() -> str:
    """Airflow's [core] hostname_callable for the workers of this profile: 'worker1.<host>'."""
    name = os.environ.get(_WORKER_NAME_ENV)
    return f"{name}.{socket.getfqdn()}" if name else socket.getfqdn()


def production_services(settings: Settings, overrides: dict[str, str] | None = None) -> list[Service]:
    """The Airflow components, in start order (the api-server migrates the database first); overrides: see Service."""
    env = dict(overrides or {})
    workers = [CeleryWorker(settings, i, env) for i in range(1, settings.production.workers + 1)]
    return [ApiServer(settings, env), Scheduler(settings, env), DagProcessor(settings, env), Triggerer(settings, env),
            *workers]


def running_profile(settings: Settings) -> str | None:
    """Which profile's Airflow this state folder is running (from the recorded pids), if any."""
    run, logs = settings.state_path / "run", settings.state_path / "logs"
    names = [p.stem for p in run.glob("airflow*.pid")]
    alive = [n for n in names if ManagedProcess(n, [], run, logs).pid() is not None]
    if any(n.startswith("airflow-") for n in alive):
        return PROFILE
    return "embedded" if "airflow" in alive else None
