"""Credentials from the Airflow Connections, end to end: a real `airflow dags test` task reads Parquet
through DuckDB and an object through boto3 from an S3 that accepts only one key, and produces to
Kafka, with nothing but the feedloop_s3 / feedloop_kafka Connections (AIRFLOW_CONN_* JSON) to go on.

The S3 here is a second embedded SeaweedFS started with an identity (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY in its environment): unlike the session's, it refuses anonymous requests and
other keys, so a read that succeeds proves which key was used.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from feedloop.core import duck
from feedloop.ops import stack
from feedloop.core.config import load_settings
from feedloop.core.credentials import resolve_s3
from feedloop.core.process import free_port
from feedloop.core.storage import ObjectStore
from tests.conftest import stack_environ

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

KEY_ID, SECRET = "AKCREDCHECK", uuid.uuid4().hex  # a static key: no session token
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@contextmanager
def _environ(extra: dict[str, str | None]):
    previous = {k: os.environ.get(k) for k in extra}
    for key, value in extra.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory):
    """Settings of an embedded SeaweedFS that accepts only KEY_ID / SECRET."""
    environ = {**stack_environ(tmp_path_factory.mktemp("private-s3")), "FEEDLOOP_STACK__EMBEDDED_KAFKA": "false",
               "FEEDLOOP_S3__LAKE_BUCKET": f"cred-{uuid.uuid4().hex[:8]}"}
    settings = load_settings(environ={**os.environ, **environ})
    with _environ({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": None}):
        stack.up(settings, echo=lambda _msg: None)
    try:
        yield settings
    finally:
        with _environ({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}):
            stack.down(settings, echo=lambda _msg: None)


@pytest.fixture(scope="module")
def lake_objects(private_s3) -> dict[str, str]:
    """A Parquet file and a text object in the private S3, written with its key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(1, 101))}), buf)
    bucket = private_s3.s3.lake_bucket
    with _environ({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}):
        store = ObjectStore.from_settings(private_s3)
        store.put(bucket, "t/numbers.parquet", buf.getvalue())
        store.put(bucket, "t/hello.txt", b"hello from the private bucket")
    return {"parquet": f"s3://{bucket}/t/numbers.parquet", "object": f"{bucket}/t/hello.txt"}


def test_the_private_s3_refuses_anonymous_and_other_keys(private_s3, lake_objects):
    """Without this the task's success would prove nothing: the session's S3 accepts any key."""
    from botocore.exceptions import ClientError

    bucket = private_s3.s3.lake_bucket
    with _environ({name: None for name in AWS_VARS}):
        assert resolve_s3(private_s3.s3).anonymous
        with pytest.raises(ClientError):
            ObjectStore.from_settings(private_s3).get(bucket, "t/hello.txt")
    with _environ({"AWS_ACCESS_KEY_ID": "AKOTHER", "AWS_SECRET_ACCESS_KEY": "other"}):
        with pytest.raises(ClientError):
            ObjectStore.from_settings(private_s3).get(bucket, "t/hello.txt")
        con = duck.connect(private_s3, threads=1, memory_limit="256MB")
        with pytest.raises(Exception, match="(?i)403|forbidden|denied|HTTP"):
            con.execute("SELECT count(*) FROM read_parquet(?)", [lake_objects["parquet"]]).fetchone()


def test_an_airflow_task_reads_s3_and_produces_to_kafka_through_the_connections(
        airflow_cli, embedded, private_s3, lake_objects, topic, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "credentials_dag.py").symlink_to(Path(__file__).parents[1] / "support" / "credentials_dag.py")
    out = tmp_path / "result.json"
    nowhere = f"127.0.0.1:{free_port()}"  # the FEEDLOOP_* endpoints lead nowhere: only the Connections work
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "FEEDLOOP_S3__ENDPOINT_URL": f"http://{nowhere}",
        "FEEDLOOP_KAFKA__BOOTSTRAP_SERVERS": nowhere,
        "AIRFLOW_CONN_FEEDLOOP_S3": json.dumps({
            "conn_type": "aws", "login": KEY_ID, "password": SECRET,
            "extra": {"endpoint_url": private_s3.s3.endpoint_url, "region_name": private_s3.s3.region}}),
        "AIRFLOW_CONN_FEEDLOOP_KAFKA": json.dumps({
            "conn_type": "kafka", "extra": {"bootstrap.servers": embedded.kafka.bootstrap_servers}}),
        "CREDCHECK_PARQUET": lake_objects["parquet"], "CREDCHECK_OBJECT": lake_objects["object"],
        "CREDCHECK_TOPIC": topic, "CREDCHECK_OUT": str(out),
    }
    with _environ({name: None for name in AWS_VARS}):  # no keys for the task but the Connection's
        done = airflow_cli("dags", "test", "feedloop_credentials_check", "2026-11-20T00:00:00+00:00", env_extra=env)
    assert done.returncode == 0 and out.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert (result["rows"], result["total"]) == (100, 5050)
    assert result["body"] == "hello from the private bucket"
    assert result["s3_source"] == "Airflow Connection 'feedloop_s3' (its keys)"
    assert result["kafka_source"] == "Airflow Connection 'feedloop_kafka'"
    assert SECRET not in done.stdout + done.stderr
    assert _read_topic(embedded, topic) == [b"produced-inside-airflow"]


def _read_topic(settings, topic: str) -> list[bytes]:
    from kafka import TopicPartition

    from feedloop.core.streams import consumer

    c = consumer(settings.kafka)
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        values: list[bytes] = []
        for _ in range(10):
            batch = c.poll(timeout_ms=1000)
            if not batch and values:
                break
            values += [record.value for records in batch.values() for record in records]
        return values
    finally:
        c.close()
