"""Kafka clients (kafka-python) built from feedloop settings, and topic provisioning.

Why: the simulator, the ingest sink and the serving pods talk to the same cluster with the
same bootstrap servers; in production only the settings change (a real Kafka cluster), and
the connection and SASL / TLS settings come from feedloop.core.credentials (the Airflow Connection
inside a task).
"""

from __future__ import annotations

from feedloop.core.config import KafkaSettings
from feedloop.core.credentials import resolve_kafka


def producer(kafka: KafkaSettings, **overrides):
    from kafka import KafkaProducer

    options = dict(
        **resolve_kafka(kafka).kafka_python(),
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        retries=5,
    )
    options.update(overrides)
    return KafkaProducer(**options)


def consumer(kafka: KafkaSettings, **overrides):
    from kafka import KafkaConsumer

    options = dict(
        **resolve_kafka(kafka).kafka_python(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        # A transactional producer (Kafka Streams, Flink's exactly-once sink) leaves the records of an aborted
        # transaction in the log; read_uncommitted (the client's default) would land them as events.
        isolation_level="read_committed",
    )
    options.update(overrides)
    return KafkaConsumer(**options)


def ensure_topic(kafka: KafkaSettings, *, topic: str | None = None, partitions: int | None = None) -> bool:
    """Create the topic if it does not exist; True if it was created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = topic or kafka.topic
    admin = KafkaAdminClient(**resolve_kafka(kafka).kafka_python(), request_timeout_ms=10_000)
    try:
        if topic in admin.list_topics():
            return False
        try:
            admin.create_topics([NewTopic(topic, partitions or kafka.partitions, 1)])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()

