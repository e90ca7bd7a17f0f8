"""An AWS environment with nothing in it, so each test sets exactly the credentials it is about."""

from __future__ import annotations

import pytest

_AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
             "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AIRFLOW_CONN_FEEDLOOP_S3", "AIRFLOW_CONN_FEEDLOOP_KAFKA",
             "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD", "_AIRFLOW_PROCESS_CONTEXT")


@pytest.fixture(autouse=True)
def clean_aws(monkeypatch, tmp_path):
    """No keys in env, empty shared files, no instance metadata: the chain finds only what a test puts there."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    credentials, config = tmp_path / "aws-credentials", tmp_path / "aws-config"
    credentials.write_text("")
    config.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return credentials


@pytest.fixture
def inside_airflow(monkeypatch):
    """Resolve as an Airflow task does. Airflow itself reads the Connection (AIRFLOW_CONN_* env form);
    tests/integration/test_credentials.py proves the detection in a real `airflow dags test` task."""
    monkeypatch.setattr("feedloop.core.credentials.in_airflow", lambda: True)
