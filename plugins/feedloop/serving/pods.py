"""Run ranking pods: one in the foreground (`feedloop serve`), or several on one machine.

Why replicas as separate processes on consecutive ports: that is what a deployment has (pods
behind a load balancer, each following the pointer on its own), so the demo, the tests and
bench/serve.py see the same propagation and hot-swap behaviour as production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from feedloop.core.config import Settings
from feedloop.core.process import ManagedProcess, StackError, port_in_use

APP = "feedloop.serving.app:create_app"


def run_pod(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """One pod in the foreground (blocks); with several workers their metrics are merged."""
    import uvicorn

    if port_in_use(port, host if host not in ("0.0.0.0", "::") else "127.0.0.1"):
        raise StackError(f"serving pod: port {port} is in use; stop what holds it or pass --port")
    if workers > 1:
        metrics_dir = settings.state_path / "serving-metrics" / str(port)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, log_level="info", access_log=False,
                timeout_graceful_shutdown=10)


def run_replicas(settings: Settings, *, host: str, port: int, workers: int, replicas: int) -> int:
    """`replicas` pods on port, port+1, ... in the foreground; Ctrl-C / SIGTERM stops them all."""
    procs = [subprocess.Popen([sys.executable, "-m", "feedloop.ops.cli", "serve", "--host", host,
                               "--port", str(port + i), "--workers", str(workers), "--replicas", "1"])
             for i in range(replicas)]

    def stop(*_):
        for p in procs:
            p.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop()
        codes = [p.wait() for p in procs]
    return max(codes)


@dataclass
class Pods:
    """Pods started in the background (demo, tests, bench), each a process group under the state folder."""

    settings: Settings
    port: int
    replicas: int
    workers: int = 1
    env: dict[str, str] | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        state = self.settings.state_path
        return [ManagedProcess(name=f"serving-{self.port + i}",
                               argv=[sys.executable, "-m", "feedloop.ops.cli", "serve", "--port", str(self.port + i),
                                     "--workers", str(self.workers), "--replicas", "1"],
                               run_dir=state / "run", log_dir=state / "logs", env=self.env or {})
                for i in range(self.replicas)]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + i}" for i in range(self.replicas)]

    def start(self, *, timeout: float = 60.0) -> list[str]:
        """Start the pods that are not running and wait until each answers /healthz (alive, maybe not ready)."""
        for proc in self.processes:
            if proc.pid() is None:
                proc.start()
        deadline = time.monotonic() + timeout
        for proc, url in zip(self.processes, self.urls):
            while not _alive(url):
                if proc.exited_early():
                    raise StackError(f"serving pod {url} exited at start; see {proc.log_file}")
                if time.monotonic() > deadline:
                    raise StackError(f"serving pod {url} did not answer /healthz within {timeout:.0f}s; "
                                     f"see {proc.log_file}")
                time.sleep(0.2)
        return self.urls

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()

    def versions(self) -> list[str | None]:
        """The live version each pod serves now (None: not ready or not answering)."""
        out = []
        for url in self.urls:
            try:
                live = httpx.get(f"{url}/version", timeout=5).json().get("live")
            except (httpx.HTTPError, ValueError):
                live = None
            out.append(live["version"] if live else None)
        return out

    def wait_for(self, version: str, *, timeout: float = 60.0) -> float:
        """Seconds until every pod serves `version` live; StackError after timeout.

        Each uvicorn worker of a pod follows the pointer on its own and a connection reaches any one of
        them, so with several workers the answer must agree over many fresh connections in a row.
        """
        t0, agreeing, needed = time.monotonic(), 0, 1 if self.workers == 1 else 10 * self.workers
        while True:
            versions = self.versions()
            agreeing = agreeing + 1 if all(v == version for v in versions) else 0
            if agreeing >= needed:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise StackError(f"pods {self.urls} serve {versions}, not {version}, after {timeout:.0f}s; "
                                 f"see {Path(self.processes[0].log_file).parent}/serving-*.log")
            if not agreeing:
                time.sleep(0.1)


def _alive(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
