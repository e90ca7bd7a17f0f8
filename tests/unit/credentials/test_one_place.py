"""Only feedloop.core.credentials says how to authenticate to S3 and Kafka.

Why a source check: the bug this guards against was a module building its client with credentials of
its own (DuckDB's baked-in key, Kafka clients with only bootstrap servers). A new client that passes
keys, SASL or bootstrap settings itself fails here and names the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import feedloop

PACKAGE = Path(feedloop.__file__).parent
CLIENT_KEYWORDS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "bootstrap_servers",
                   "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "ssl_cafile"}
CLIENT_KEYS = {"bootstrap.servers", "security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username",
               "sasl.password", "ssl.ca.location", "s3_access_key_id", "s3_secret_access_key", "s3_session_token"}
# (file, name): why it may
ALLOWED = {
    ("ops/stack/services.py", "bootstrap_servers"): "probes the embedded Tansu broker it started (no auth) for readiness",
    ("ops/stack/services.py", "bootstrap.servers"): "writes the embedded stack's feedloop_kafka Connection itself",
}


def _findings(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            found += [(kw.arg, node.lineno) for kw in node.keywords if kw.arg in CLIENT_KEYWORDS]
        elif isinstance(node, ast.Dict):
            found += [(k.value, k.lineno) for k in node.keys
                      if isinstance(k, ast.Constant) and k.value in CLIENT_KEYS]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(name, node.lineno) for name in ("s3_access_key_id", "CREATE SECRET")
                      if name in node.value and (name, path.name) != ("CREATE SECRET", "duck.py")]
    return found


def test_no_module_but_credentials_configures_s3_or_kafka_authentication():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "core/credentials.py":
            continue
        offenders += [f"plugins/feedloop/{rel}:{line}: {name}" for name, line in _findings(path)
                      if (rel, name) not in ALLOWED]
    assert not offenders, ("build clients from feedloop.core.credentials (resolve_s3 / resolve_kafka), not with settings "
                           "of their own:\n" + "\n".join(offenders))
