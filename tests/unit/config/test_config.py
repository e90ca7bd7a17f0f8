from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from feedloop.core.config import load_settings


def test_committed_config_loads():
    settings = load_settings(environ={})
    assert settings.kafka.topic == "engagement"
    assert settings.state_path.is_absolute()


def test_env_overrides_nested_keys_with_yaml_typing():
    settings = load_settings(environ={"FEEDLOOP_KAFKA__PARTITIONS": "8", "FEEDLOOP_STACK__EMBEDDED_S3": "false",
                                      "FEEDLOOP_S3__ENDPOINT_URL": "https://s3.example.com"})
    assert settings.kafka.partitions == 8
    assert settings.stack.embedded_s3 is False
    assert settings.s3.endpoint_url == "https://s3.example.com"


@pytest.mark.parametrize("environ", [
    pytest.param({"FEEDLOOP_KAFKA__PARTITONS": "8"}, id="misspelt-env-key"),
    pytest.param({"FEEDLOOP_KAFKA__PARTITIONS": "many"}, id="mistyped-env-value"),
    pytest.param({"FEEDLOOP_STACK__KAFKA_STORAGE": "disk"}, id="value-outside-enum"),
])
def test_bad_overrides_are_errors_not_defaults(environ):
    with pytest.raises(ValidationError):
        load_settings(environ=environ)


def test_misspelt_key_in_file_is_an_error(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topik: x\n")
    with pytest.raises(ValidationError, match="topik"):
        load_settings(path, environ={})
