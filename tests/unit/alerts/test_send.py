"""Delivery imports without Airflow, and reads the live pointer and reports where the registry writes them."""

from __future__ import annotations

import subprocess
import sys

from feedloop.core import layout
from feedloop.promotion.registry import Registry


def test_the_delivery_module_imports_without_airflow():
    """The promotion steps announce a rollback through it: importing it must not load Airflow."""
    code = "import sys, feedloop.alerts.send; print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_alerts_read_the_pointer_and_reports_the_registry_writes():
    registry = Registry(store=None, bucket="models")
    assert layout.RANKER_LIVE_KEY == registry.live_key == "ranker/live.json"
    assert layout.version_uri("models", "2026-11-05-ab") == registry.version_uri("2026-11-05-ab") \
        == "s3://models/ranker/versions/2026-11-05-ab/"
