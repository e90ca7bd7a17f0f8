"""A producer configuration librdkafka refuses stops the pod's start, not the logging thread later."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException

from feedloop.core.config import load_settings
from feedloop.serving.impressions import ImpressionLog


def test_a_producer_librdkafka_refuses_fails_start_instead_of_killing_the_logging_thread(tmp_path):
    settings = load_settings()
    log = ImpressionLog(settings.kafka, settings.serving)
    log._client_config |= {"security.protocol": "ssl", "ssl.ca.location": str(tmp_path / "missing-ca.pem")}

    with pytest.raises(KafkaException, match="ssl.ca.location"):
        log.start()
    assert not log._thread.is_alive()
