"""S3 credentials: Connection (inside Airflow) > environment > AWS default chain > anonymous on this machine only.

The same resolution feeds boto3 (ObjectStore) and DuckDB (its S3 secret), so a session token reaches both.
"""

from __future__ import annotations

import json

import pytest

from feedloop.core import credentials
from feedloop.core import duck
from feedloop.core.config import S3Settings, load_settings
from feedloop.core.credentials import CredentialsError, resolve_s3
from feedloop.core.storage import ObjectStore

LOCAL = S3Settings(endpoint_url="http://127.0.0.1:8333")
REMOTE = S3Settings(endpoint_url="https://s3.eu-west-1.amazonaws.com", region="eu-west-1")


def _env_keys(monkeypatch, key="AKENV", secret="env-secret", token=None):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)


def _profile(path, key="AKPROFILE", secret="profile-secret", token="profile-token"):
    path.write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
                    f"aws_session_token = {token}\n")


def _connection(monkeypatch, conn_id="feedloop_s3", **body):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **body}))


def test_inside_airflow_the_connection_wins_over_env_and_profile(monkeypatch, clean_aws, inside_airflow):
    _env_keys(monkeypatch)
    _profile(clean_aws)
    _connection(monkeypatch, login="AKCONN", password="conn-secret",
                extra={"aws_session_token": "conn-token", "endpoint_url": "http://127.0.0.1:9999",
                       "region_name": "eu-central-1"})
    found = resolve_s3(LOCAL)
    assert (found.access_key, found.secret_key, found.session_token) == ("AKCONN", "conn-secret", "conn-token")
    assert (found.endpoint_url, found.region) == ("http://127.0.0.1:9999", "eu-central-1")
    assert "feedloop_s3" in found.source


def test_a_connection_without_keys_takes_them_from_the_chain_and_keeps_its_endpoint(monkeypatch, inside_airflow):
    """The embedded stack's Connection names only the endpoint: keys then come from env / role."""
    _env_keys(monkeypatch, token="env-token")
    _connection(monkeypatch, extra={"endpoint_url": "http://127.0.0.1:7777", "region_name": "us-east-1"})
    found = resolve_s3(LOCAL)
    assert (found.access_key, found.session_token) == ("AKENV", "env-token")
    assert found.endpoint_url == "http://127.0.0.1:7777"


def test_the_embedded_stacks_connection_alone_is_anonymous_on_its_local_endpoint(monkeypatch, inside_airflow):
    """`make demo`: Airflow gets a feedloop_s3 Connection with only the SeaweedFS endpoint, and no keys exist."""
    _connection(monkeypatch, extra={"endpoint_url": "http://127.0.0.1:7777", "region_name": "us-east-1"})
    found = resolve_s3(LOCAL)
    assert found.anonymous and found.endpoint_url == "http://127.0.0.1:7777"
    assert found.source == "Airflow Connection 'feedloop_s3' (anonymous: no credentials found)"


def test_inside_airflow_without_the_connection_env_and_config_are_used(monkeypatch, inside_airflow):
    _env_keys(monkeypatch, token="env-token")
    found = resolve_s3(REMOTE)
    assert (found.access_key, found.session_token) == ("AKENV", "env-token")
    assert (found.endpoint_url, found.region) == (REMOTE.endpoint_url, "eu-west-1")


def test_outside_airflow_a_connection_in_the_environment_is_not_read(monkeypatch):
    """CLI and pods use the AWS chain; an exported AIRFLOW_CONN_* must not silently change their keys."""
    _env_keys(monkeypatch)
    _connection(monkeypatch, login="AKCONN", password="conn-secret")
    assert resolve_s3(LOCAL).access_key == "AKENV"


def test_env_keys_win_over_the_shared_profile(monkeypatch, clean_aws):
    _profile(clean_aws)
    _env_keys(monkeypatch)
    found = resolve_s3(REMOTE)
    assert (found.access_key, found.session_token) == ("AKENV", None)


def test_temporary_keys_from_the_chain_keep_their_session_token(clean_aws):
    """An instance role / SSO / assumed role: temporary keys are useless without their token."""
    _profile(clean_aws, token="profile-token")
    found = resolve_s3(REMOTE)
    assert (found.access_key, found.secret_key, found.session_token) == ("AKPROFILE", "profile-secret", "profile-token")


def test_nothing_found_for_a_local_endpoint_is_anonymous_not_a_baked_in_key():
    found = resolve_s3(LOCAL)
    assert found.anonymous and found.secret_key is None and "anonymous" in found.source


@pytest.mark.parametrize("s3", [
    pytest.param(REMOTE, id="remote-endpoint"),
    pytest.param(S3Settings(endpoint_url=""), id="aws-default-endpoint"),
])
def test_nothing_found_for_a_remote_endpoint_is_a_clear_error(s3):
    with pytest.raises(CredentialsError, match=r"no S3 credentials.*feedloop_s3.*AWS_ACCESS_KEY_ID.*AWS_SESSION_TOKEN"):
        resolve_s3(s3)


def test_secrets_stay_out_of_the_repr(monkeypatch):
    _env_keys(monkeypatch, secret="top-secret", token="tok-secret")
    text = repr(resolve_s3(LOCAL))
    assert "top-secret" not in text and "tok-secret" not in text


@pytest.mark.parametrize("url,local", [
    ("http://127.0.0.1:8333", True), ("http://localhost:9000", True), ("http://[::1]:8333", True),
    ("http://127.0.0.2:8333", True), ("https://s3.amazonaws.com", False), ("http://10.0.0.5:9000", False),
    ("http://minio:9000", False), ("", False),
])
def test_is_loopback(url, local):
    assert credentials.is_loopback(url) is local


def _duck_secret(s3: S3Settings) -> str:
    settings = load_settings(environ={}).model_copy(update={"s3": s3})
    con = duck.connect(settings, threads=1, memory_limit="256MB")
    try:
        rows = con.execute("SELECT secret_string FROM duckdb_secrets() WHERE type = 's3'").fetchall()
    finally:
        con.close()
    assert len(rows) == 1, rows
    return rows[0][0]


def test_duckdb_passes_the_session_token_when_there_is_one(monkeypatch):
    _env_keys(monkeypatch, token="env-token")
    secret = _duck_secret(LOCAL)
    assert "key_id=AKENV" in secret and "session_token=redacted" in secret
    assert "endpoint=127.0.0.1:8333" in secret and "url_style=path" in secret and "use_ssl=false" in secret


def test_duckdb_uses_the_chain_when_env_has_no_keys(clean_aws):
    _profile(clean_aws)
    secret = _duck_secret(REMOTE)
    assert "key_id=AKPROFILE" in secret and "session_token=redacted" in secret and "use_ssl=true" in secret


def test_duckdb_has_no_baked_in_key():
    secret = _duck_secret(LOCAL)
    assert "key_id" not in secret and "secret=" not in secret and "session_token" not in secret


def test_duckdb_refuses_a_remote_endpoint_without_credentials():
    with pytest.raises(CredentialsError, match="no S3 credentials"):
        _duck_secret(REMOTE)


def test_boto3_signs_with_the_same_credentials_as_duckdb(monkeypatch):
    _env_keys(monkeypatch, token="env-token")
    signer = ObjectStore(LOCAL).client._request_signer
    creds = signer._credentials.get_frozen_credentials()
    assert (creds.access_key, creds.token) == ("AKENV", "env-token")


def test_boto3_is_unsigned_on_a_local_endpoint_with_no_credentials():
    from botocore import UNSIGNED

    assert ObjectStore(LOCAL).client.meta.config.signature_version is UNSIGNED


def test_temporary_keys_stay_refreshable_for_boto3_and_reach_duckdb_with_their_token(tmp_path):
    """Like an instance role: keys that expire. A pod's boto3 client must renew them itself (it runs for
    days); DuckDB gets the current key and its session token."""
    import sys
    from datetime import datetime, timedelta, timezone

    from botocore.credentials import RefreshableCredentials

    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    script = tmp_path / "issue.py"
    script.write_text("import json; print(json.dumps({'Version': 1, 'AccessKeyId': 'AKTEMP', 'SecretAccessKey': "
                      f"'temp-secret', 'SessionToken': 'temp-token', 'Expiration': '{expires}'}}))")
    (tmp_path / "aws-config").write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    signer_creds = ObjectStore(REMOTE).client._request_signer._credentials
    assert isinstance(signer_creds, RefreshableCredentials)
    assert signer_creds.get_frozen_credentials().token == "temp-token"
    secret = _duck_secret(REMOTE)
    assert "key_id=AKTEMP" in secret and "session_token=redacted" in secret


def test_airflow_is_detected_in_a_task_and_in_its_servers_and_nowhere_else(monkeypatch):
    from airflow.sdk.execution_time.supervisor import set_supervisor_comms

    assert not credentials.in_airflow()
    with set_supervisor_comms(object()):  # what `dag.test()` does for its in-process task runner
        assert credentials.in_airflow()
    assert not credentials.in_airflow()
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # set by Airflow's api-server, scheduler, triggerer
    assert credentials.in_airflow()


_KEYS = {"none": None, "keys": ("secret", None), "keys+token": ("secret", "token")}


def test_the_resolution_order_holds_for_every_combination_of_sources(monkeypatch, clean_aws):
    """Connection (inside Airflow) > environment > shared profile > anonymous, each with its own token or none."""
    from itertools import product

    for conn, env, profile, airflow in product(_KEYS, _KEYS, ("none", "keys+token"), (True, False)):
        with monkeypatch.context() as m:
            m.setattr("feedloop.core.credentials.in_airflow", lambda airflow=airflow: airflow)
            if _KEYS[conn]:
                _connection(m, login="AKCONN", password=_KEYS[conn][0],
                            extra={"aws_session_token": _KEYS[conn][1]} if _KEYS[conn][1] else {})
            if _KEYS[env]:
                _env_keys(m, key="AKENV", secret=_KEYS[env][0], token=_KEYS[env][1])
            clean_aws.write_text("")
            if profile != "none":
                _profile(clean_aws, key="AKPROFILE", secret="secret", token="token")
            expected = next(((key, _KEYS[name][1]) for key, name, used in (
                ("AKCONN", conn, airflow), ("AKENV", env, True), ("AKPROFILE", profile, True))
                if used and _KEYS[name]), (None, None))
            found = resolve_s3(LOCAL)
            assert (found.access_key, found.session_token) == expected, (conn, env, profile, airflow, found.source)
