"""Session fixtures: one real embedded S3 (SeaweedFS) and Kafka (Tansu) per pytest process (each of
`make test`'s two xdist workers has its own), and how the suite is split between those workers.

They start on free ports under a temporary state folder, so a developer's own `make demo`
stack on the default ports is never touched.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from feedloop.ops import stack
from feedloop.core.config import Settings, load_settings
from feedloop.core.process import port_in_use


def _group(nodeid: str) -> str:
    """What runs on one worker under `pytest -n`: a module (its module fixtures, such as a real DAG run, are
    built once), or the browser package (its tests share one Airflow)."""
    path = nodeid.split("::")[0]
    return "tests/browser" if path.startswith("tests/browser/") else path


def _cost_rank(items: list[pytest.Item]) -> int:
    """0 for a group that runs Airflow or the browser, 1 for one on the embedded stack, 2 for the rest."""
    marks = {m.name for item in items for m in item.iter_markers()}
    return 0 if marks & {"airflow", "browser"} else 1 if "integration" in marks else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The groups that run Airflow first: handed out last, one of them would keep a worker busy while the
    other idles (`make test` runs `pytest -n 2`)."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(_group(item.nodeid), []).append(item)
    items[:] = [item for group in sorted(groups.values(), key=_cost_rank) for item in group]   # a stable sort


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist's scheduling by scope, with `_group` as the scope, in the order collected.

    Why not `--dist loadgroup` with xdist_group marks: pytest 9 keeps the node id where xdist 3.8 no longer
    writes the group into it, so every test became its own group (seen: two workers each ran the production
    profile's fixtures)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    config.option.loadscopereorder = False   # keep the order above, not the most tests first
    return GroupScheduling(config, log)


def _free_block(size: int, *, extra_offset: int = 10_000) -> int:
    """A base port such that base..base+size and base+8+extra_offset are all free."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(20_000, 30_000)
        ports = [*range(base, base + size), base + 8 + extra_offset]
        if not any(port_in_use(p) for p in ports):
            return base
    raise RuntimeError("no free port block for the test stack")


def stack_environ(state_dir: Path, *, airflow: bool = False) -> dict[str, str]:
    """FEEDLOOP_* overrides for an isolated stack on free ports."""
    base = _free_block(20)
    s3_port, kafka_port, airflow_port = base + 14, base + 15, base + 16
    return {
        "FEEDLOOP_STATE_DIR": str(state_dir),
        "FEEDLOOP_STACK__S3_PORT": str(s3_port),
        "FEEDLOOP_STACK__S3_INTERNAL_PORT_BASE": str(base),
        "FEEDLOOP_STACK__KAFKA_PORT": str(kafka_port),
        "FEEDLOOP_STACK__AIRFLOW_PORT": str(airflow_port),
        "FEEDLOOP_STACK__EMBEDDED_AIRFLOW": "true" if airflow else "false",
        "FEEDLOOP_S3__ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "FEEDLOOP_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
    }


@pytest.fixture(scope="session")
def embedded(tmp_path_factory) -> Settings:
    """Settings pointing at a running embedded S3 + Kafka, shared by the whole session."""
    state = tmp_path_factory.mktemp("stack")
    environ = stack_environ(state)
    settings = load_settings(environ={**os.environ, **environ})
    stack.up(settings, echo=lambda _msg: None)
    previous = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)  # subprocesses and load_settings() in tests see this stack
    try:
        yield settings
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack.down(settings, echo=lambda _msg: None)


@pytest.fixture
def topic(embedded) -> str:
    """A fresh topic per test, so tests never see each other's records."""
    from feedloop.core.streams import ensure_topic

    name = f"t-{uuid.uuid4().hex[:10]}"
    ensure_topic(embedded.kafka, topic=name, partitions=embedded.kafka.partitions)
    return name


@pytest.fixture
def store(embedded):
    from feedloop.core.storage import ObjectStore

    return ObjectStore.from_settings(embedded)


@pytest.fixture(scope="session")
def airflow_cli(embedded):
    """Run `airflow ...` against a migrated SQLite metadata DB wired to the session stack.

    Returns a function: airflow_cli("dags", "test", "ingest_engagement", "2026-11-20", env={...}).
    """
    import subprocess

    env = {**os.environ, **stack.airflow_env(embedded), **stack.settings_env(embedded)}
    migrate = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    def run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 600):
        return subprocess.run(["airflow", *args], env={**env, **(env_extra or {})}, capture_output=True, text=True,
                              timeout=timeout)

    return run
