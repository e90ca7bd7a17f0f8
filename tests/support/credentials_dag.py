"""A one-task DAG for tests/integration/test_credentials.py: inside a real Airflow task, feedloop reads
S3 through DuckDB and boto3 and produces to Kafka with only what the feedloop_s3 / feedloop_kafka
Connections say (the FEEDLOOP_* endpoints it is given lead nowhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["feedloop", "test"],
     default_args={"retries": 0})
def feedloop_credentials_check():
    @task
    def read_and_produce() -> None:
        from feedloop.core import duck
        from feedloop.core import streams
        from feedloop.core.config import load_settings
        from feedloop.core.credentials import resolve_kafka, resolve_s3
        from feedloop.core.storage import ObjectStore

        settings = load_settings()
        con = duck.connect(settings, threads=1, memory_limit="256MB")
        rows, total = con.execute("SELECT count(*), sum(x) FROM read_parquet(?)",
                                  [os.environ["CREDCHECK_PARQUET"]]).fetchone()
        bucket, key = os.environ["CREDCHECK_OBJECT"].split("/", 1)
        body = ObjectStore.from_settings(settings).get(bucket, key).body.decode()
        producer = streams.producer(settings.kafka)
        producer.send(os.environ["CREDCHECK_TOPIC"], b"produced-inside-airflow").get(timeout=60)
        producer.close()
        Path(os.environ["CREDCHECK_OUT"]).write_text(json.dumps({
            "rows": rows, "total": total, "body": body, "s3_source": resolve_s3(settings.s3).source,
            "kafka_source": resolve_kafka(settings.kafka).source}))

    read_and_produce()


feedloop_credentials_check()
