"""The production profile for real: Airflow on PostgreSQL, the CeleryExecutor with Redis, two Celery workers.

One production stack (`feedloop stack up --profile production`: its own SeaweedFS and Tansu, a
metadata database and Redis key prefix of its own) runs the daily flow through the scheduler, while
the same simulated days run under the embedded profile (`airflow dags test`, SQLite) on the session
stack; the outputs must be identical. Bucket names and the topic are the same on both stacks, so
even object keys, lineage and model versions can be compared one to one.

Needs PostgreSQL and Redis (production.metadata_db_url / production.broker_url): where they do not
answer the tests skip, unless FEEDLOOP_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feedloop.ops import simulate
from feedloop.ops import stack
from feedloop.core.config import Settings, load_settings
from feedloop.promotion.registry import Registry
from feedloop.ops.stack import production
from feedloop.core.process import free_port, port_in_use
from feedloop.core.storage import ObjectStore
from tests.conftest import stack_environ
from tests.support import production_cleanup

# Three days of GX validation per profile dominate; a test's timeout also covers the stack's start.
pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.production, pytest.mark.timeout(1800)]

DAYS = 3
START = datetime.now(timezone.utc).date() - timedelta(days=DAYS)  # catchup covers exactly the simulated days
LAST = START + timedelta(days=DAYS - 1)                            # the first day with enough history to train
EVENTS_PER_DAY = 6_000
SEED = 11
RUN_TIMEOUT = 600
PIPELINE = ("validate", "build_dataset", "train", "evaluate", "export", "gate", "register", "flip")


def _check_services(settings: Settings) -> None:
    """Skip (or fail under FEEDLOOP_REQUIRE_SERVICES=1) when PostgreSQL or Redis does not answer."""
    import psycopg2
    import redis
    from sqlalchemy.engine import make_url

    problems = []
    url = make_url(settings.production.metadata_db_url)
    try:
        psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password, dbname="postgres",
                         connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not there"
        problems.append(f"PostgreSQL at {url.host}:{url.port} ({str(exc).strip().splitlines()[0]})")
    try:
        redis.Redis.from_url(settings.production.broker_url, socket_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"Redis at {settings.production.broker_url} ({exc})")
    if problems:
        msg = f"the production profile needs {' and '.join(problems)}"
        if os.environ.get("FEEDLOOP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{msg}; FEEDLOOP_REQUIRE_SERVICES=1 makes a missing service a failure")
        pytest.skip(f"{msg}; skipped (set FEEDLOOP_REQUIRE_SERVICES=1 to fail instead)")


def _free_ports(n: int) -> int:
    """A base port P with P .. P+n-1 free (the api-server, triggerer and worker log servers), below the kernel's
    ephemeral range (32768-60999): a port there can be taken by any process's outgoing connection between this
    check and the bind (seen in CI: the api-server's 36072, "address already in use")."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - n)
        if not any(port_in_use(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port block for the production stack")


@contextmanager
def _environ(extra: dict[str, str]):
    """os.environ with `extra` while the stack starts processes (they inherit it), then restored."""
    previous = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    """The same bucket and topic names on both stacks, so objects, lineage and versions compare 1:1."""
    suffix = uuid.uuid4().hex[:8]
    return {"FEEDLOOP_S3__LAKE_BUCKET": f"plake-{suffix}", "FEEDLOOP_S3__MODELS_BUCKET": f"pmodels-{suffix}",
            "FEEDLOOP_KAFKA__TOPIC": f"pengagement-{suffix}", "FEEDLOOP_RETRAIN__START_DATE": START.isoformat(),
            # small chunks: the sink checkpoints while it runs, so a worker can be killed mid-ingest
            "FEEDLOOP_INGEST__CHUNK_RECORDS": "1000", "FEEDLOOP_INGEST__MAX_POLL_BYTES": "16384",
            # the first trained day has one day of history: a valid model is enough to flip
            "FEEDLOOP_PROMOTION__FLOORS": '{"auc": 0.0, "ndcg@10": 0.0}',
            "_suffix": suffix}


def _common(names: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in names.items() if not k.startswith("_")}


def _publish(settings: Settings) -> int:
    """The simulated days to this stack's Kafka (deterministic for the seed) and the item catalog to its lake."""
    from feedloop.core.streams import ensure_topic

    store = ObjectStore.from_settings(settings)
    store.ensure_bucket(settings.s3.lake_bucket)
    store.ensure_bucket(settings.s3.models_bucket)
    ensure_topic(settings.kafka)
    sim = simulate.Simulator(settings, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY, seed=SEED)
    simulate.write_catalog(settings, sim)
    return simulate.produce(settings, sim.records(simulate.SimulationReport(START, DAYS)))


# ---------------------------------------------------------------- the embedded profile (reference) --


class Reference:
    """The same days under the embedded profile, run in a background thread while the production stack
    starts and works: most of both is GX validation, one core each, so the file takes half the time.

    `ingested` resolves to (settings, events) after ingest_engagement; `retrained` to how long each
    retrain_ranker day took: the `airflow dags test` process, and the DAG run as Airflow recorded it.
    """

    def __init__(self, airflow_cli, env: dict[str, str]):
        settings = load_settings(environ={**os.environ, **env})  # here: the main thread changes os.environ later
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-reference")
        self.ingested = self._pool.submit(self._ingest, airflow_cli, env, settings)
        self.retrained = self._pool.submit(self._retrain, airflow_cli, env)  # runs after the ingest

    @staticmethod
    def _ingest(airflow_cli, env: dict[str, str], settings: Settings) -> tuple[Settings, int]:
        events = _publish(settings)
        done = airflow_cli("dags", "test", "ingest_engagement", f"{LAST + timedelta(days=1)}T00:00:00+00:00",
                           env_extra=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return settings, events

    @staticmethod
    def _retrain(airflow_cli, env: dict[str, str]) -> dict[str, dict[str, float]]:
        seconds: dict[str, dict[str, float]] = {}
        for d in range(DAYS):
            day = (START + timedelta(days=d)).isoformat()
            t0 = time.perf_counter()
            done = airflow_cli("dags", "test", "retrain_ranker", day, env_extra=env)
            seconds[day] = {"process": time.perf_counter() - t0}
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # `dags test` records the run's start as its logical date: time the run by its task instances
        states = airflow_cli("tasks", "states-for-dag-run", "retrain_ranker", f"{LAST}T00:00:00+00:00", "-o", "json",
                             env_extra=env)
        tis = [t for t in _json_list(states.stdout) if t["start_date"] and t["end_date"]]
        first, last = min(t["start_date"] for t in tis), max(t["end_date"] for t in tis)
        seconds[LAST.isoformat()]["dag_run"] = _duration({"start_date": first, "end_date": last})
        return seconds

    @property
    def settings(self) -> Settings:
        return self.ingested.result(timeout=RUN_TIMEOUT)[0]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")  # session scope: checked before the session's embedded stack starts
def services() -> Settings:
    """PostgreSQL and Redis answer, else skip or fail."""
    settings = load_settings()
    _check_services(settings)
    return settings


@pytest.fixture(scope="module")
def reference(services, embedded, airflow_cli, names):
    ref = Reference(airflow_cli, _common(names))
    if os.environ.get("PRODUCTION_TEST_SERIAL") == "1":  # for timing both profiles without overlap
        ref.retrained.result()
    yield ref
    ref.close()


# ------------------------------------------------------------------------- the production profile --


@pytest.fixture(scope="module")
def receivers():
    """A Slack incoming webhook and an SMTP server (with AUTH) on 127.0.0.1 that record what they get."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    posts: list[str] = []
    logins: list[tuple[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args):
            pass

    class Inbox:
        async def handle_DATA(self, _server, _session, _envelope):  # noqa: N802 (aiosmtpd's naming)
            return "250 OK"

    def authenticate(_server, _session, _envelope, _mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)

    web = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=free_port(), authenticator=authenticate,
                      auth_require_tls=False)
    smtp.start()
    yield {"slack_port": web.server_address[1], "smtp_port": smtp.port, "posts": posts, "logins": logins}
    web.shutdown()
    smtp.stop()


@pytest.fixture(scope="module")
def credentials() -> dict[str, str]:
    """Recognizable credentials, configured where an operator would put them (env and Connections)."""
    tag = uuid.uuid4().hex[:12]
    return {"s3_access_key": f"AKIAFEEDLOOP{tag.upper()}", "s3_secret_key": f"s3SecretKey-{tag}",
            "slack_token": f"T0SECRET/B0SECRET/slackToken{tag}", "smtp_password": f"smtpPassword-{tag}"}


@pytest.fixture(scope="module")
def prod(tmp_path_factory, names, credentials, receivers, services, reference):
    """`feedloop stack up --profile production` on free ports, its own database and broker prefix.

    Depends on `reference` only so that the embedded run starts first and overlaps with this one.
    """
    from sqlalchemy.engine import make_url

    state = tmp_path_factory.mktemp("production")
    database = f"feedloop_test_{names['_suffix']}"
    port = _free_ports(5)
    env = {
        **stack_environ(state, airflow=True),
        "FEEDLOOP_STACK__AIRFLOW_PORT": str(port),
        "FEEDLOOP_STACK__PROFILE": "production",
        "FEEDLOOP_STACK__READY_TIMEOUT_S": "300",
        "FEEDLOOP_PRODUCTION__METADATA_DB_URL": make_url(services.production.metadata_db_url).set(
            database=database).render_as_string(hide_password=False),
        **_common(names),
        # a killed worker's task is noticed after this many seconds without a heartbeat (default 300)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        # credentials: S3 keys for feedloop (AWS chain) and in the feedloop_s3 Connection; alert channels
        "AWS_ACCESS_KEY_ID": credentials["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": credentials["s3_secret_key"],
        "AIRFLOW_CONN_FEEDLOOP_SLACK": json.dumps({
            "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{receivers['slack_port']}/hook",
            "password": credentials["slack_token"]}),
        "AIRFLOW_CONN_FEEDLOOP_SMTP": json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": receivers["smtp_port"], "login": "feedloop-alerts",
            "password": credentials["smtp_password"], "extra": {"disable_tls": True, "disable_ssl": True}}),
    }
    settings = load_settings(environ={**os.environ, **env})
    env["AIRFLOW_CONN_FEEDLOOP_S3"] = json.dumps({
        "conn_type": "aws", "login": credentials["s3_access_key"], "password": credentials["s3_secret_key"],
        "extra": {"endpoint_url": settings.s3.endpoint_url, "region_name": settings.s3.region}})

    def up() -> float:
        t0 = time.perf_counter()
        with _environ(env):
            stack.up(settings, echo=lambda _msg: None)
        return time.perf_counter() - t0

    # SeaweedFS takes its S3 identity from these variables: this stack accepts only this key, so the test
    # process uses it too while the module runs (the session's embedded S3 accepts any key).
    with _environ({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}):
        try:
            started_in = up()
            events = _publish(settings)
            api = production.api(settings)
            api.http.timeout = 60  # a busy 2-core machine answers slowly; a slow answer is not a failure
            yield {"settings": settings, "env": env, "state": state, "up": up, "api": api,
                   "events": events, "started_in": started_in, "database": database}
        finally:
            stack.down(settings, echo=lambda _msg: None)
            orphans = production_cleanup.processes_of(state)
            production_cleanup.drop(settings, database)
    assert not orphans, f"processes left after `down`: {orphans}"




def _wait(predicate, *, timeout: float, what: str, poll: float = 0.5):
    """Poll until `predicate` returns something true; a slow answer of a busy api-server is polled again."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _finished(api, dag_id: str, run_id: str) -> str:
    """The final state of a DAG run."""
    state = {}

    def done() -> bool:
        state["value"] = api.run_state(dag_id, run_id)
        return state["value"] in ("success", "failed")

    _wait(done, timeout=RUN_TIMEOUT, what=f"{dag_id} run {run_id} to finish", poll=2)
    return state["value"]


def _objects(settings: Settings, bucket: str, prefix: str = "") -> dict[str, str]:
    """key -> sha256 of the content, for every object under the prefix."""
    store = ObjectStore.from_settings(settings)
    return {key: hashlib.sha256(store.get(bucket, key).body).hexdigest() for key in store.list_keys(bucket, prefix)}


def _worker(prod, hostname: str):
    """The CeleryWorker service whose task instances report this hostname ('worker1.<host>')."""
    workers = [s for s in stack.services(prod["settings"]) if isinstance(s, production.CeleryWorker)]
    return next(w for w in workers if hostname.startswith(f"{w.worker}."))


def _json_list(text: str) -> list[dict]:
    """The (non-empty) JSON list of objects in a CLI's output, past any log lines printed before it."""
    decoder = json.JSONDecoder()
    for at in (i for i, ch in enumerate(text) if ch == "["):
        try:
            value, _ = decoder.raw_decode(text[at:])
        except ValueError:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
    raise AssertionError(f"no JSON list in: {text[-2000:]}")


def _duration(run: dict) -> float:
    start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


# --------------------------------------------------------------------------------------------- tests --


def test_a_worker_killed_mid_ingest_is_recovered_by_retries_with_nothing_duplicated(prod, reference):
    settings, api = prod["settings"], prod["api"]
    lake = settings.s3.lake_bucket
    store = ObjectStore.from_settings(settings)
    api.wait_for_dag("ingest_engagement")
    api.unpause("ingest_engagement")  # catchup off: the scheduler creates the latest interval's run at once
    run_id = _wait(lambda: next((r["dag_run_id"] for r in api.dag_runs("ingest_engagement")), None),
                   timeout=120, what="the scheduled ingest_engagement run")

    def running_after_a_checkpoint():
        ti = api.task_instances("ingest_engagement", run_id)[0]
        assert ti["state"] not in ("success", "failed"), f"the sink finished before it could be killed: {ti}"
        checkpointed = next(store.list_keys(lake, "_ingest/engagement/checkpoints/"), None)
        return ti if ti["state"] == "running" and ti["hostname"] and checkpointed else None

    victim_ti = _wait(running_after_a_checkpoint, timeout=180, what="the sink running with a checkpoint", poll=0.1)
    victim = _worker(prod, victim_ti["hostname"])
    # The machine dies: the worker, its pool, the task's supervisor and the task runner (its own group).
    for pgid in production.process_tree_groups(victim.process.pid()):
        os.killpg(pgid, signal.SIGKILL)

    assert _finished(api, "ingest_engagement", run_id) == "success"
    api.http.patch("/dags/ingest_engagement", json={"is_paused": True})  # no further 15-minute runs
    ti = api.task_instances("ingest_engagement", run_id)[0]
    assert ti["try_number"] >= 2 and ti["hostname"] != victim_ti["hostname"], ti
    assert victim.process.pid() is None

    # Exactly the objects the embedded run wrote from the same log: same keys, same bytes, no extra part.
    ref, ref_events = reference.ingested.result(timeout=RUN_TIMEOUT)
    assert _objects(settings, lake, "events/") == _objects(ref, ref.s3.lake_bucket, "events/")
    assert not list(store.list_keys(lake, "deadletter/"))
    ids = [pq.read_table(io.BytesIO(store.get(lake, k).body), columns=["event_id"])["event_id"].to_pylist()
           for k in store.list_keys(lake, "events/")]
    flat = [i for part in ids for i in part]
    assert len(flat) == len(set(flat)) == prod["events"] == ref_events

    prod["up"]()  # `up` is idempotent: only the killed worker starts again
    assert victim.process.pid() is not None and victim.ready()


def test_a_backfill_of_three_days_through_the_rest_api_completes_with_the_expected_outputs(prod):
    settings, api = prod["settings"], prod["api"]
    api.wait_for_dag("retrain_ranker")
    resp = api.http.post("/backfills", json={
        "dag_id": "retrain_ranker", "from_date": f"{START}T00:00:00Z", "to_date": f"{LAST}T00:00:00Z",
        "max_active_runs": 1})
    assert resp.status_code == 200, resp.text
    backfill = resp.json()
    api.unpause("retrain_ranker")  # backfill runs are scheduled for unpaused DAGs only

    def finished():
        runs = api.dag_runs("retrain_ranker")
        done = len(runs) == DAYS and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    runs = _wait(finished, timeout=3 * RUN_TIMEOUT, what="the backfill's three runs", poll=3)
    assert [(r["logical_date"][:10], r["run_type"], r["state"]) for r in runs] == [
        ((START + timedelta(days=d)).isoformat(), "backfill", "success") for d in range(DAYS)]
    _wait(lambda: api.http.get(f"/backfills/{backfill['id']}").json()["completed_at"], timeout=60,
          what="the backfill to be marked completed")

    store = ObjectStore.from_settings(settings)
    for d in range(DAYS):
        day = START + timedelta(days=d)
        assert store.get(settings.s3.lake_bucket, f"validation/dt={day}/index.html") is not None
    states = {r["logical_date"][:10]: {t["task_id"]: t["state"] for t in api.task_instances(
        "retrain_ranker", r["dag_run_id"])} for r in runs}
    for d in range(DAYS - 1):  # too little history: validated, training skipped
        assert states[(START + timedelta(days=d)).isoformat()]["build_dataset"] == "skipped"
    trained = states[LAST.isoformat()]
    assert {t: trained[t] for t in PIPELINE} == dict.fromkeys(PIPELINE, "success"), trained
    live = Registry.from_settings(settings).live()
    assert live is not None and live.version.startswith(LAST.isoformat())


def test_the_daily_dag_on_two_celery_workers_equals_the_embedded_run(prod, reference):
    settings, api, ref = prod["settings"], prod["api"], reference.settings
    embedded_seconds = reference.retrained.result(timeout=3 * RUN_TIMEOUT)
    run = next(r for r in api.dag_runs("retrain_ranker") if r["logical_date"].startswith(LAST.isoformat()))

    def lineage(s: Settings) -> dict:
        return json.loads(ObjectStore.from_settings(s).get(s.s3.lake_bucket,
                                                           f"datasets/ranker/{LAST}/lineage.json").body)

    ours, theirs = lineage(settings), lineage(ref)
    assert (ours["content_hash"], ours["rows"]) == (theirs["content_hash"], theirs["rows"])
    registry, ref_registry = Registry.from_settings(settings), Registry.from_settings(ref)
    live, ref_live = registry.live(), ref_registry.live()
    assert live.version == ref_live.version  # a hash of model.txt, the feature manifest and the data lineage
    assert registry.read(live.version, "model.txt") == ref_registry.read(ref_live.version, "model.txt")
    assert registry.read(live.version, "model.onnx") == ref_registry.read(ref_live.version, "model.onnx")
    metrics = registry.read_json(live.version, "metrics.json")
    ref_metrics = ref_registry.read_json(ref_live.version, "metrics.json")
    assert metrics["candidate"]["overall"] == ref_metrics["candidate"]["overall"]

    hosts = {t["hostname"] for r in api.dag_runs("retrain_ranker") + api.dag_runs("ingest_engagement")
             for t in api.task_instances(r["dag_id"], r["dag_run_id"]) if t["hostname"]}
    workers = {f"{w.worker}." for w in stack.services(settings) if isinstance(w, production.CeleryWorker)}
    assert {w for w in workers if any(h.startswith(w) for h in hosts)} == workers, hosts

    embedded_s = embedded_seconds[LAST.isoformat()]
    tasks = {t["task_id"]: _duration(t) for t in api.task_instances("retrain_ranker", run["dag_run_id"])
             if t["start_date"] and t["end_date"]}
    print(f"\nretrain_ranker {LAST}, validate .. flip, wall time of the DAG run: production profile (scheduler, "
          f"2 Celery workers) {_duration(run):.1f}s; embedded profile (`airflow dags test`, SQLite) "
          f"{embedded_s.get('dag_run', float('nan')):.1f}s ({embedded_s['process']:.1f}s with the CLI's start); "
          f"production tasks: " + ", ".join(f"{k} {v:.1f}s" for k, v in tasks.items())
          + f"; production stack up {prod['started_in']:.1f}s; load average {os.getloadavg()[0]:.1f}")


def test_secrets_never_reach_task_logs_objects_or_metrics(prod, credentials, receivers):
    settings, api = prod["settings"], prod["api"]
    # A run that fails on purpose, so the failure alert uses the Slack and SMTP Connections.
    api.wait_for_dag("rollback_ranker")
    api.unpause("rollback_ranker")
    run_id = api.trigger("rollback_ranker", conf={"to_version": "2000-01-01-0000000000", "reason": "secrets test"})
    assert _finished(api, "rollback_ranker", run_id) == "failed"
    _wait(lambda: receivers["posts"] and receivers["logins"], timeout=60, what="the failure alert")
    token = credentials["slack_token"]
    assert any(path.endswith(token) for path in receivers["posts"]), receivers["posts"]  # the secrets were used
    assert ("feedloop-alerts", credentials["smtp_password"]) in receivers["logins"]

    haystacks: dict[str, bytes] = {}
    for path in prod["state"].rglob("*.log"):  # every component log and every task log of every run
        haystacks[str(path)] = path.read_bytes()
    for run in api.dag_runs("rollback_ranker") + api.dag_runs("retrain_ranker") + api.dag_runs("ingest_engagement"):
        for ti in api.task_instances(run["dag_id"], run["dag_run_id"]):
            if ti["try_number"]:
                log = api.http.get(f"/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances/"
                                   f"{ti['task_id']}/logs/{ti['try_number']}", headers={"Accept": "text/plain"})
                haystacks[f"api log {run['dag_id']}.{ti['task_id']} {run['dag_run_id']}"] = log.content
    store = ObjectStore.from_settings(settings)
    for bucket in (settings.s3.lake_bucket, settings.s3.models_bucket):  # manifests, reports, metrics, datasets
        for key in store.list_keys(bucket):
            haystacks[f"s3://{bucket}/{key}"] = store.get(bucket, key).body
    assert len([h for h in haystacks if h.startswith("api log")]) >= 10
    assert any("metrics.json" in h for h in haystacks) and any("report.html" in h for h in haystacks)
    leaks = [(name, where) for name, value in credentials.items() for where, body in haystacks.items()
             if value.encode() in body]
    leaks += [("admin password", where) for where, body in haystacks.items()
              if production.admin_password(settings).encode() in body]
    assert not leaks, leaks


def test_status_and_login_of_the_running_production_stack(prod):
    """`feedloop stack status` finds the running profile by itself; the API refuses requests without a login."""
    import subprocess

    import httpx

    env = {k: v for k, v in {**os.environ, **prod["env"]}.items() if k != "FEEDLOOP_STACK__PROFILE"}
    done = subprocess.run([str(Path(os.sys.executable).parent / "feedloop"), "-o", "json", "stack", "status"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    status = {s["name"]: s for s in json.loads(done.stdout)}
    assert set(status) == {"s3", "kafka", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                           "airflow-triggerer", "airflow-worker-1", "airflow-worker-2"}
    assert all(s["ready"] for s in status.values()), status
    url = f"http://127.0.0.1:{prod['settings'].stack.airflow_port}"
    assert httpx.get(f"{url}/api/v2/dags", timeout=10).status_code == 401
    assert httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "admin"}, timeout=10).status_code == 401
