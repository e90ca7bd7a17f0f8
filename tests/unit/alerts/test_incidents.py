"""The incident state machine: new, repeat within the window, repeat after it, resolved."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from feedloop.alerts import incidents

T0 = datetime(2026, 11, 6, 3, 0, tzinfo=timezone.utc)
WINDOW = timedelta(hours=24)
CONTENT = {"dag_id": "retrain_ranker", "check": "validate", "kind": "validation failed", "headline": "h"}


def _open(**changes) -> dict:
    return {**incidents.opened(CONTENT, now=T0, run_id="r1"), **changes}


@pytest.mark.parametrize("record, now, repeat", [
    pytest.param(None, T0, False, id="no-record-is-new"),
    pytest.param(_open(), T0 + timedelta(hours=23), True, id="open-within-window-repeats"),
    pytest.param(_open(), T0 + timedelta(hours=25), False, id="open-past-window-is-new"),
    pytest.param(_open(state=incidents.RESOLVED), T0 + timedelta(minutes=5), False, id="after-resolved-is-new"),
])
def test_a_failure_repeats_only_an_open_incident_seen_within_the_window(record, now, repeat):
    assert incidents.is_repeat(record, now, WINDOW) is repeat


def test_a_repeat_counts_and_keeps_the_incident():
    first = _open()
    later = T0 + timedelta(hours=2)
    again = incidents.repeated(first, {**CONTENT, "headline": "h2"}, now=later, run_id="r2")
    again = incidents.repeated(again, CONTENT, now=later, run_id="r1")
    assert (again["id"], again["opened_at"], again["count"]) == (first["id"], first["opened_at"], 3)
    assert again["last_seen"] == later.isoformat() and again["runs"] == ["r2", "r1"]
    assert again["state"] == incidents.OPEN and again["delivered"] == {"slack": None, "email": None}


def test_resolving_keeps_what_happened():
    done = incidents.resolved(_open(count=4), now=T0 + timedelta(hours=1),
                              resolution={"text": "validate succeeded", "run_id": "r9", "run_url": "http://a/r9"})
    assert done["state"] == incidents.RESOLVED and done["count"] == 4
    assert done["resolved_at"] == (T0 + timedelta(hours=1)).isoformat() and done["resolution"]["run_id"] == "r9"


def test_keys_name_the_dag_task_and_day():
    assert incidents.key("retrain_ranker", "validate", "dt=2026-11-06") == \
        "_alerts/incidents/retrain_ranker/validate/dt=2026-11-06.json"
