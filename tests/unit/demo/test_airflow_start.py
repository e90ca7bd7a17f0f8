"""The demo starts Airflow on a thread while the first day is served, and waits for it only where it is needed."""

from __future__ import annotations

import threading
from datetime import date

import pytest

from feedloop.core.config import load_settings
from feedloop.core.process import StackError
from feedloop.ops import demo
from feedloop.ops import stack


def test_the_first_up_leaves_airflow_out_and_the_rest_of_the_settings_alone():
    settings = load_settings(environ={"FEEDLOOP_STACK__KAFKA_PORT": "19999"})
    base = demo.without_airflow(settings)
    assert settings.stack.embedded_airflow and not base.stack.embedded_airflow
    assert base.stack.kafka_port == 19999 and base.s3 == settings.s3
    assert [s.name for s in stack.services(base)] == ["s3", "kafka"]


def test_airflow_starts_in_the_background_and_its_lines_come_out_when_it_is_needed(monkeypatch):
    release, calls = threading.Event(), []

    def slow_up(settings, *, echo, env):
        calls.append((settings.stack.embedded_airflow, env))
        echo("S3 (SeaweedFS): already running (pid 1)")
        echo("Airflow (standalone): starting (log: airflow.log)")
        release.wait(10)
        echo("Airflow (standalone): ready in 61.0s")
        return ["statuses"]

    monkeypatch.setattr(stack, "up", slow_up)
    start = demo.AirflowStart(load_settings(environ={}), {"FEEDLOOP_RETRAIN__CATCHUP": "false"}, date(2026, 12, 3))
    assert calls == [(True, {"FEEDLOOP_RETRAIN__CATCHUP": "false"})]  # started at once, not waited for
    printed: list[str] = []
    release.set()
    assert start.services(printed.append) == ["statuses"]
    assert printed == ["Airflow (standalone): starting (log: airflow.log)", "Airflow (standalone): ready in 61.0s"]


def test_a_failed_airflow_start_stops_the_demo_where_airflow_is_needed(monkeypatch):
    def failing_up(settings, *, echo, env):
        raise StackError("Airflow (standalone): exited during start-up; see airflow.log for why")

    monkeypatch.setattr(stack, "up", failing_up)
    start = demo.AirflowStart(load_settings(environ={}), {}, date(2026, 12, 3))
    with pytest.raises(StackError, match="exited during start-up; see airflow.log"):
        start.ready(print)
