"""A small client for Airflow's stable REST API (v2): trigger DAG runs and wait for them.

Why: the demo and the CLI drive the real Airflow the way an operator or an external system
would — through its API, with a login — rather than calling DAG code directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
import orjson

TERMINAL = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """The API refused a request; the message carries Airflow's own detail."""


@dataclass
class AirflowApi:
    base_url: str
    username: str
    password: str

    @classmethod
    def for_standalone(cls, base_url: str, password_file: Path) -> AirflowApi:
        """Log in as the admin user `airflow standalone` generated."""
        passwords = orjson.loads(password_file.read_bytes())
        return cls(base_url, "admin", passwords["admin"])

    @cached_property
    def http(self) -> httpx.Client:
        token = httpx.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password},
                           timeout=30)
        if token.status_code >= 300:
            raise AirflowApiError(f"login to {self.base_url} as {self.username} failed: {token.status_code} {token.text}")
        return httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=30,
                            headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def _call(self, method: str, path: str, **kwargs) -> dict:
        resp = self.http.request(method, path, **kwargs)
        if resp.status_code >= 300:
            raise AirflowApiError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed the DAG (a fresh stack needs a few seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.http.get(f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise AirflowApiError(f"DAG {dag_id} did not appear within {timeout:.0f}s; check the dag-processor log")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def dag_details(self, dag_id: str) -> dict:
        """The DAG as the running Airflow parsed it (schedule, start_date, catchup, is_paused, ...)."""
        return self._call("GET", f"/dags/{dag_id}/details")

    def trigger(self, dag_id: str, *, logical_date: str | None = None, conf: dict | None = None,
                run_id: str | None = None, data_interval: tuple[str, str] | None = None) -> str:
        """Queue a run; `data_interval` (start, end) as a scheduled run would have it (Airflow infers the
        interval BEFORE the logical date for a manual run of a data-interval timetable)."""
        body: dict = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        if data_interval:
            body["data_interval_start"], body["data_interval_end"] = data_interval
        return self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict | None:
        """The run, or None if there is no run with that id."""
        resp = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300:
            raise AirflowApiError(f"GET /dags/{dag_id}/dagRuns/{run_id}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait(self, dag_id: str, run_id: str, timeout: float = 900, poll: float = 2.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.run_state(dag_id, run_id)
            except httpx.TimeoutException:  # a busy api-server (SQLite locked by the scheduler): ask again
                continue
            if state in TERMINAL:
                return state
            time.sleep(poll)
        raise AirflowApiError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s; {self.stuck(dag_id, run_id)}")

    def stuck(self, dag_id: str, run_id: str) -> str:
        """Where an unfinished run stands: its run state, its unfinished tasks and the scheduler's health,
        so a timeout says whether a task hangs, waits for a slot, or no scheduler is running."""
        try:
            run = self.dag_run(dag_id, run_id) or {}
            tasks = [f"{t['task_id']}={t['state']} (try {t.get('try_number')})"
                     for t in self.task_instances(dag_id, run_id) if t["state"] not in {"success", "skipped"}]
            health = self._call("GET", "/monitor/health")
        except (AirflowApiError, httpx.HTTPError) as exc:
            return f"its state could not be read: {exc}"
        parts = ", ".join(f"{name} {(health.get(name) or {}).get('status')} (last heartbeat "
                          f"{(health.get(name) or {}).get('latest_' + name + '_heartbeat', '?')})"
                          for name in ("scheduler", "triggerer", "dag_processor"))
        return (f"run {run.get('state')} since {run.get('start_date') or run.get('queued_at')}; unfinished tasks: "
                f"{', '.join(tasks) or 'none'}; {parts}")

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of the DAG, oldest logical date first."""
        return self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "logical_date", "limit": 1000})[
            "dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")["value"]

    def create_backfill(self, dag_id: str, *, from_date: str, to_date: str, conf: dict | None = None,
                        reprocess: str = "none", max_active_runs: int = 1) -> dict:
        """One run per schedule interval in [from_date, to_date], each with `conf` as its params; days that
        already ran are re-run with it only if `reprocess` says so ("completed": all, "failed": failed ones).

        On SQLite (the embedded stack) Airflow answers 503 "Database is locked" while the scheduler
        writes, and retrying for up to two minutes gets through. Airflow commits the backfill row first
        and, on SQLite, each of its runs on its own, and may fail to delete them after the lock: an orphan
        that refuses every later backfill of the DAG ("another backfill is running"). The orphan is
        cancelled, which fails the runs it queued, and the retry re-runs those: a "none" backfill is
        retried as "failed", unless a day in the range had failed before, which it must not touch.
        """
        body = {"dag_id": dag_id, "from_date": from_date, "to_date": to_date, "dag_run_conf": conf,
                "reprocess_behavior": reprocess, "max_active_runs": max_active_runs}
        first = self._runs_between(dag_id, from_date, to_date)
        deadline, pause, before = time.monotonic() + 120, 1.0, first
        while True:
            resp = self.http.post("/backfills", json=body)
            if not (resp.status_code == 503 and "locked" in resp.text) or time.monotonic() > deadline:
                break
            for orphan in self._active_backfills(dag_id):
                if _queued(self._runs_between(dag_id, from_date, to_date)) != _queued(before):
                    body["reprocess_behavior"] = self._reprocess_after_partial(orphan["id"], body, first, resp.text)
                self._call("PUT", f"/backfills/{orphan['id']}/cancel")
            time.sleep(pause)
            pause = min(pause * 2, 8.0)
            before = self._runs_between(dag_id, from_date, to_date)
        if resp.status_code >= 300:
            raise AirflowApiError(f"POST /backfills: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    @staticmethod
    def _reprocess_after_partial(orphan_id: int, body: dict, first: list[dict], answer: str) -> str:
        """How the retry must reprocess so the runs the orphan queued, failed by its cancel, run again."""
        if body["reprocess_behavior"] != "none":
            return body["reprocess_behavior"]
        failed = sorted(r["dag_run_id"] for r in first if r["state"] == "failed")
        if failed:
            raise AirflowApiError(
                f"POST /backfills: Airflow answered 503 ({answer[:200]}) but created backfill {orphan_id} with "
                f"some of its runs, and retrying it would also re-run {', '.join(failed)}, which failed before "
                f"and reprocess 'none' leaves alone: check GET /api/v2/backfills/{orphan_id} and the runs of "
                f"{body['dag_id']} from {body['from_date']} to {body['to_date']}; cancel it (PUT /api/v2/backfills/"
                f"{orphan_id}/cancel) and trigger the missing days")
        return "failed"

    def _active_backfills(self, dag_id: str) -> list[dict]:
        return [b for b in self._call("GET", "/backfills", params={"dag_id": dag_id})["backfills"]
                if b["completed_at"] is None]

    def _runs_between(self, dag_id: str, from_date: str, to_date: str) -> list[dict]:
        """The DAG's runs with a logical date in the range."""
        params = {"logical_date_gte": from_date, "logical_date_lte": to_date, "limit": 1000}
        return self._call("GET", f"/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def backfill(self, backfill_id: int) -> dict:
        return self._call("GET", f"/backfills/{backfill_id}")


def _queued(runs: list[dict]) -> set[tuple]:
    """What a backfill changes in the range's runs: it adds runs or re-queues them (a run that only progresses
    changes its state, not these)."""
    return {(r["dag_run_id"], r["run_type"], r["queued_at"]) for r in runs}
