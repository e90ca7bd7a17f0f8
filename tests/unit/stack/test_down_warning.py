"""`stack down` says loudly when Kafka's log is lost with it (stack.kafka_storage: memory), and what to do."""

from __future__ import annotations

import pytest

from feedloop.ops import stack
from feedloop.core.config import load_settings
from feedloop.core.process import ManagedProcess


def _settings(tmp_path, storage: str):
    return load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path), "FEEDLOOP_STACK__EMBEDDED_S3": "false",
                                  "FEEDLOOP_STACK__EMBEDDED_AIRFLOW": "false",
                                  "FEEDLOOP_STACK__KAFKA_STORAGE": storage})


@pytest.mark.parametrize("storage,warned", [pytest.param("memory", True, id="memory-log-is-lost"),
                                            pytest.param("s3", False, id="s3-log-is-kept")])
def test_stopping_kafka_with_memory_storage_warns_that_the_log_is_gone(tmp_path, storage, warned):
    settings = _settings(tmp_path, storage)
    ManagedProcess("kafka", ["sleep", "60"], tmp_path / "run", tmp_path / "logs").start()  # stands in for Tansu's pid
    said: list[str] = []
    assert stack.down(settings, echo=said.append) == ["kafka"]
    warning = [line for line in said if line.startswith("WARNING")]
    assert bool(warning) == warned
    if warned:
        assert "log is gone" in warning[0] and "feedloop ingest reset-checkpoint" in warning[0]
        assert "stack.kafka_storage: s3" in warning[0]


def test_the_embedded_kafka_keeps_its_log_by_default(tmp_path):
    assert load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path)}).stack.kafka_storage == "s3"
