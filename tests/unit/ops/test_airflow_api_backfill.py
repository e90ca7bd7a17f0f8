"""Creating a backfill on SQLite, where Airflow answers 503 "Database is locked" while its scheduler writes.

The lock is a race a real standalone hits only now and then (CI, 2026-12-05: five tests lost to one
orphaned backfill), so these tests play Airflow 3's backfill route back in a transport handler, orphan
included; tests/integration/test_params.py creates backfills on the real one.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from feedloop.ops.airflow_api import AirflowApi, AirflowApiError

LOCKED = {"detail": "Database is locked. Backfill creation is not supported on SQLite under concurrent access. "
                    "Please use PostgreSQL or MySQL."}


class FakeBackfillRoute:
    """POST /backfills fails `locks` times, each time leaving its backfill row behind (Airflow's cleanup also
    lost the lock) and, if `partial`, one of its runs; an active backfill refuses the next POST with 409."""

    def __init__(self, locks: int, partial: bool = False, earlier_state: str = "success"):
        self.locks, self.partial = locks, partial
        self.backfills: list[dict] = []
        self.runs: list[dict] = [{"dag_run_id": "scheduled__2026-01-02", "run_type": "scheduled",
                                  "queued_at": "2026-01-03T00:00:01Z", "state": earlier_state}]
        self.cancelled: list[int] = []
        self.reprocess: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v2")
        if request.method == "GET" and path == "/backfills":
            return httpx.Response(200, json={"backfills": self.backfills})
        if request.method == "GET" and path.endswith("/dagRuns"):
            assert request.url.params["logical_date_gte"] and request.url.params["logical_date_lte"]
            return httpx.Response(200, json={"dag_runs": self.runs})
        if request.method == "PUT" and path.endswith("/cancel"):
            backfill_id = int(path.split("/")[2])
            self.cancelled.append(backfill_id)
            self.backfills[backfill_id - 1]["completed_at"] = "2026-01-05T00:00:00Z"
            for run in self.runs:  # cancelling fails the backfill's queued runs
                run["state"] = "failed" if run["state"] == "queued" else run["state"]
            return httpx.Response(200, json=self.backfills[backfill_id - 1])
        assert request.method == "POST" and path == "/backfills", (request.method, path)
        if any(b["completed_at"] is None for b in self.backfills):
            return httpx.Response(409, json={"detail": "Another backfill is running for Dag retrain."})
        self.backfills.append({"id": len(self.backfills) + 1, "completed_at": None})
        self.reprocess.append(orjson.loads(request.content)["reprocess_behavior"])
        if self.locks:
            self.locks -= 1
            if self.partial:  # SQLite: the runs created before the lock stay committed
                self.runs.append({"dag_run_id": "backfill__2026-01-03", "run_type": "backfill",
                                  "queued_at": "2026-01-05T00:00:00Z", "state": "queued"})
            return httpx.Response(503, json=LOCKED)
        return httpx.Response(200, json=self.backfills[-1])


def _api(route: FakeBackfillRoute, monkeypatch) -> AirflowApi:
    monkeypatch.setattr("feedloop.ops.airflow_api.time.sleep", lambda _: None)
    api = AirflowApi("http://airflow", "admin", "pw")
    api.__dict__["http"] = httpx.Client(base_url="http://airflow/api/v2", transport=httpx.MockTransport(route))
    return api


def test_an_empty_orphan_left_by_a_locked_database_is_cancelled_and_the_backfill_created(monkeypatch):
    route = FakeBackfillRoute(locks=2)
    created = _api(route, monkeypatch).create_backfill("retrain", from_date="2026-01-02T00:00:00Z",
                                                        to_date="2026-01-04T00:00:00Z")
    assert created["id"] == 3 and route.cancelled == [1, 2]


def test_an_orphan_with_runs_is_cancelled_and_retried_so_its_failed_runs_run_again(monkeypatch):
    """CI, 2026-12-07: the orphan had committed some of its runs. Cancelling fails them; the retry of a
    "none" backfill asks for "failed", which re-runs exactly those (the range had no failed run before)."""
    route = FakeBackfillRoute(locks=1, partial=True)
    created = _api(route, monkeypatch).create_backfill("retrain", from_date="2026-01-02T00:00:00Z",
                                                        to_date="2026-01-04T00:00:00Z")
    assert created["id"] == 2 and route.cancelled == [1]
    assert route.reprocess == ["none", "failed"]


def test_a_partial_orphan_is_retried_with_the_reprocess_asked_for_when_that_reruns_its_runs(monkeypatch):
    route = FakeBackfillRoute(locks=1, partial=True, earlier_state="failed")
    created = _api(route, monkeypatch).create_backfill("retrain", from_date="2026-01-02T00:00:00Z",
                                                        to_date="2026-01-04T00:00:00Z", reprocess="completed")
    assert created["id"] == 2 and route.reprocess == ["completed", "completed"]


def test_a_partial_orphan_that_a_retry_would_widen_over_an_earlier_failed_day_is_named(monkeypatch):
    route = FakeBackfillRoute(locks=1, partial=True, earlier_state="failed")
    with pytest.raises(AirflowApiError, match=r"created backfill 1 with some of its runs, and retrying it would "
                                              r"also re-run scheduled__2026-01-02.*/backfills/1/cancel"):
        _api(route, monkeypatch).create_backfill("retrain", from_date="2026-01-02T00:00:00Z",
                                                  to_date="2026-01-04T00:00:00Z")
    assert route.cancelled == []
