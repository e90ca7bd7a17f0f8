"""The embedded Kafka keeps its log across `feedloop stack down` / `up` (stack.kafka_storage: s3, the default).

Before, the default was memory: after a restart the topic was empty and new offsets restarted at
0 under checkpoints far beyond them (issue 17, point 16).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from feedloop.core.config import load_settings
from tests.conftest import stack_environ

pytestmark = pytest.mark.integration


def _feedloop(env, *args):
    return subprocess.run([sys.executable, "-m", "feedloop.ops.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _log(settings) -> tuple[list[bytes], str]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    topic_id = str(admin.describe_topics([settings.kafka.topic])[0]["topic_id"])
    admin.close()
    tp = TopicPartition(settings.kafka.topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    values, empty = [], 0
    while empty < 3:
        polled = consumer.poll(timeout_ms=500)
        empty = 0 if polled else empty + 1
        values += [r.value for records in polled.values() for r in records]
    consumer.close()
    return values, topic_id


def test_the_embedded_kafka_log_survives_stack_down_and_up(tmp_path):
    env = {**os.environ, **stack_environ(tmp_path, airflow=False)}
    env.pop("FEEDLOOP_STACK__KAFKA_STORAGE", None)  # the default
    settings = load_settings(environ=env)
    assert settings.stack.kafka_storage == "s3"
    try:
        assert _feedloop(env, "stack", "up").returncode == 0
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
        for i in range(500):
            producer.send(settings.kafka.topic, value=b"record-%d" % i, partition=0)
        producer.flush()
        producer.close()
        before = _log(settings)
        down = _feedloop(env, "stack", "down")
        assert down.returncode == 0 and "log is gone" not in down.stdout + down.stderr
        assert _feedloop(env, "stack", "up").returncode == 0
        after = _log(settings)
    finally:
        _feedloop(env, "stack", "down")
    assert len(before[0]) == 500
    assert after == before, "the log or the topic's id changed across a restart"
