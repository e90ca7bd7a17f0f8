"""`feedloop stack up | down | status`: the embedded real stack on 127.0.0.1.

`up` is idempotent (a running, ready service is left alone), waits for real readiness and
tears down what it started if any service fails; `down` stops only recorded pids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from feedloop.core.config import Settings
from feedloop.core.process import ManagedProcess, StackError, port_in_use
from feedloop.ops.stack.production import production_services
from feedloop.ops.stack.services import (AirflowService, KafkaService, S3Service, Service, airflow_env,
                                         settings_env)

__all__ = ["StackError", "ServiceStatus", "up", "down", "status", "airflow_env", "settings_env"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    title: str
    running: bool
    ready: bool
    pid: int | None
    log: str
    details: dict[str, str]


def services(settings: Settings, env: dict[str, str] | None = None) -> list[Service]:
    """The embedded services this configuration asks for, in start order; env: variables their processes get on
    top of their own (Service.overrides)."""
    env = dict(env or {})
    chosen: list[Service] = []
    if settings.stack.embedded_s3:
        chosen.append(S3Service(settings, env))
    if settings.stack.embedded_kafka:
        chosen.append(KafkaService(settings, env))
    if settings.stack.embedded_airflow and settings.stack.profile == "production":
        chosen.extend(production_services(settings, env))
    elif settings.stack.embedded_airflow:
        chosen.append(AirflowService(settings, env))
    return chosen


def up(settings: Settings, *, echo: Callable[[str], None] = print,
       env: dict[str, str] | None = None) -> list[ServiceStatus]:
    """Start every embedded service in order and wait until each answers a real request.

    env: variables the processes it starts get on top of their own, e.g. the demo's FEEDLOOP_RETRAIN__* (a
    service already running keeps the environment it was started with)."""
    started: list[Service] = []
    try:
        for service in services(settings, env):
            proc = service.process
            if proc.pid() is not None and service.ready():
                echo(f"{service.title}: already running (pid {proc.pid()})")
            else:
                _start(service, settings.stack.ready_timeout_s, echo)
                started.append(service)
            service.provision()
    except BaseException:
        for service in reversed(started):
            service.process.stop()
        raise
    return status(settings)


def _start(service: Service, timeout: float, echo: Callable[[str], None]) -> None:
    proc = service.process
    proc.stop()  # a recorded but unready process of ours is restarted, never duplicated
    busy = [port for port in service.ports() if port_in_use(port)]
    if busy:
        raise StackError(
            f"{service.title}: port(s) {', '.join(map(str, busy))} already in use by another process; "
            f"stop it or {service.fix} (log: {proc.log_file})"
        )
    echo(f"{service.title}: starting (log: {proc.log_file})")
    service.prepare()
    t0 = time.monotonic()
    proc.start()
    while time.monotonic() - t0 < timeout:
        if proc.exited_early():
            raise StackError(f"{service.title}: exited during start-up; see {proc.log_file} for why")
        if service.ready():
            echo(f"{service.title}: ready in {time.monotonic() - t0:.1f}s")
            return
        time.sleep(0.5)
    raise StackError(
        f"{service.title}: not ready after {timeout:.0f}s; see {proc.log_file} "
        f"(raise FEEDLOOP_STACK__READY_TIMEOUT_S if this machine is slow)"
    )


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> list[str]:
    """Stop the services this stack started (by recorded pid), in reverse order; serving pods first."""
    stopped = _stop_serving_pods(settings, echo)
    for service in reversed(services(settings)):
        if service.process.stop():
            stopped.append(service.name)
            echo(f"{service.title}: stopped")
        else:
            echo(f"{service.title}: not running")
    if "kafka" in stopped and settings.stack.kafka_storage == "memory":
        echo(MEMORY_LOG_LOST)
    return stopped


MEMORY_LOG_LOST = (
    "WARNING: Kafka ran with stack.kafka_storage: memory, so its log is gone: every topic, record and offset. Events "
    "not ingested yet are lost, and the next `feedloop ingest run` stops because the checkpoints point past the new "
    "log; after checking, run `feedloop ingest reset-checkpoint --partition P --to earliest --reason \"...\"` for "
    "each partition it names. To keep the log across restarts: stack.kafka_storage: s3 (the default; "
    "FEEDLOOP_STACK__KAFKA_STORAGE=s3)."
)


def _stop_serving_pods(settings: Settings, echo: Callable[[str], None]) -> list[str]:
    """Pods started in the background under this state folder (feedloop.serving.pods.Pods, e.g. by `make demo`)."""
    run_dir = settings.state_path / "run"
    stopped = []
    for pid_file in sorted(run_dir.glob("serving-*.pid")):
        if ManagedProcess(pid_file.stem, [], run_dir, settings.state_path / "logs").stop():
            stopped.append(pid_file.stem)
            echo(f"serving pod :{pid_file.stem.removeprefix('serving-')}: stopped")
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    result = []
    for service in services(settings):
        proc = service.process
        pid = proc.pid()
        ready = pid is not None and service.ready()
        result.append(ServiceStatus(service.name, service.title, pid is not None, ready, pid,
                                    str(proc.log_file), service.describe()))
    return result

