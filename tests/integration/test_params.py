"""Typed params, backfills that apply them, promotion modes and the approval step, on a real Airflow.

One `airflow standalone` for the module (its own state folder and port; the session's S3 and Kafka
under buckets and a topic of its own), driven only through the REST API, as an operator's script or
the UI would. The days: S..S+3 of simulated traffic (S+3 = yesterday), retrain.start_date = S,
catchup off (unpausing would otherwise run every day since S), approval for every close call
(margin 1) with a 150 s timeout.

1. Invalid params are refused with a 400 naming the field, and no run or backfill is created.
2. S+3 runs in promotion_mode=dry-run: everything runs, nothing is registered, live.json never appears.
3. A run with three mistakes (force without force_reason, a misspelt param, gate_thresholds floors "abc")
   fails in its first task, naming each.
4. A backfill of S+1..S+3 with params (window_days 3, typed gate floors) re-runs S+3, which had run in
   dry-run: every run carries the backfill's params (conf, the checked params, the training window).
   S+1 has too little history (skipped), S+2 is the first model (flipped), S+3 waits for approval.
5. S+3's approval: Reject, then (task cleared) no answer until the timeout, then Approve: the first two
   skip the flip and record why (the flip cleared and re-run alone is skipped again), the third flips with
   the approver named in the pointer.
6. promotion_mode=force on the library: a candidate the gate blocks goes live with the reason recorded.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import orjson
import pytest

from feedloop.promotion import steps as promotion
from feedloop.core.errors import PromotionBlocked
from feedloop.promotion.flip import flip_pointer
from feedloop.ops import simulate
from feedloop.ops import stack
from feedloop.ops.airflow_api import AirflowApi, AirflowApiError
from feedloop.core.config import load_settings
from feedloop.ingest import sink
from feedloop.quality.runner import validate_day
from feedloop.promotion.registry import Registry
from feedloop.ops.stack.services import AirflowService
from feedloop.core.storage import ObjectStore
from tests.conftest import stack_environ

pytestmark = [pytest.mark.integration, pytest.mark.airflow,
              pytest.mark.timeout(3600)]  # the fixtures behind one test run several retrain runs

RETRAIN = "retrain_ranker"
S = datetime.now(timezone.utc).date() - timedelta(days=4)
DAY = {i: (S + timedelta(days=i)).isoformat() for i in range(4)}
EVENTS_PER_DAY = 3000
RUN_TIMEOUT = 1200  # one retrain run, 2 shared cores
# typed floors 0 and any regression allowed (overall, and per segment through the object param): on a few
# thousand events a day the gate must not be what decides; approval is
BACKFILL_CONF = {"window_days": 3, "min_auc": 0.0, "min_ndcg_at_10": 0.0, "max_regression": 1.0,
                 "gate_thresholds": {"segment_tolerance": 1.0}}


def _midnight(day: str) -> str:
    return f"{day}T00:00:00+00:00"


@pytest.fixture(scope="module")
def af(embedded, tmp_path_factory):
    """Airflow of this module on the session's S3 and Kafka, with S..S+3 of traffic in its own lake."""
    suffix = uuid.uuid4().hex[:8]
    topic, lake, models = f"params-{suffix}", f"lake-{suffix}", f"models-{suffix}"
    env = {
        **stack_environ(tmp_path_factory.mktemp("params-airflow"), airflow=True),
        "FEEDLOOP_STACK__EMBEDDED_S3": "false", "FEEDLOOP_STACK__EMBEDDED_KAFKA": "false",
        "FEEDLOOP_S3__ENDPOINT_URL": embedded.s3.endpoint_url,
        "FEEDLOOP_KAFKA__BOOTSTRAP_SERVERS": embedded.kafka.bootstrap_servers,
        "FEEDLOOP_S3__LAKE_BUCKET": lake, "FEEDLOOP_S3__MODELS_BUCKET": models, "FEEDLOOP_KAFKA__TOPIC": topic,
        "FEEDLOOP_RETRAIN__START_DATE": DAY[0], "FEEDLOOP_RETRAIN__CATCHUP": "false",
        # 150 s to answer: at 30 s on CI's loaded cores, and at 90 s beside a closed loop (load 10), the test's
        # Reject arrived after the timeout
        "FEEDLOOP_PROMOTION__APPROVAL_MARGIN": "1", "FEEDLOOP_PROMOTION__APPROVAL_TIMEOUT_MINUTES": "2.5",
        "FEEDLOOP_TRAIN__NUM_BOOST_ROUND": "40", "FEEDLOOP_TRAIN__MIN_BOOST_ROUND": "20",
        "FEEDLOOP_STACK__READY_TIMEOUT_S": "600",  # Airflow took more than 180 s on 2 shared, busy cores
    }
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the Airflow processes, and load_settings() here, see this module's setup
    settings = load_settings()
    # Airflow starts (a minute or more, mostly waiting on its processes) while the traffic is prepared:
    # its DAGs are paused at creation, so nothing of it reads the topic or the lake before the tests do.
    starting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="params-airflow").submit(
        stack.up, settings, echo=lambda _msg: None)
    try:
        from feedloop.core.streams import ensure_topic

        ensure_topic(settings.kafka, topic=topic)
        store = ObjectStore.from_settings(settings)
        store.ensure_bucket(lake)
        store.ensure_bucket(models)
        sim = simulate.Simulator(settings, start=S, days=4, events_per_day=EVENTS_PER_DAY, seed=3)
        simulate.write_catalog(settings, sim)
        simulate.produce(settings, sim.records(simulate.SimulationReport(S, 4)), topic=topic)
        while sink.run(settings).records:
            pass
        for d in range(3):  # what the daily runs before S+3 did: a training window must be validated
            validate_day(settings, S + timedelta(days=d), run_id="earlier daily run")
        starting.result()
        service = AirflowService(settings)
        api = AirflowApi.for_standalone(service.url, service.password_file())
        api.http.timeout = httpx.Timeout(180)  # SQLite + 2 busy cores: an answer took more than 30 s
        api.wait_for_dag(RETRAIN)
        yield SimpleNamespace(settings=settings, api=api, registry=Registry.from_settings(settings), store=store)
    finally:
        wait([starting])  # a failed data step: the Airflow start finishes before it is stopped
        stack.down(settings, echo=lambda _msg: None)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---- 1. refused at the API ----------------------------------------------------------------------

@pytest.mark.parametrize("dag_id, conf, field", [
    pytest.param(RETRAIN, {"window_days": 1}, "window_days", id="window-below-minimum"),
    pytest.param(RETRAIN, {"promotion_mode": "yolo"}, "promotion_mode", id="mode-not-in-enum"),
    pytest.param(RETRAIN, {"min_auc": 1.5}, "min_auc", id="floor-above-1"),
    pytest.param(RETRAIN, {"accept_hours": [24]}, "accept_hours", id="hour-24"),
    pytest.param(RETRAIN, {"window_days": "seven"}, "window_days", id="wrong-type"),
    pytest.param("replay_engagement", {"start": "2026-11-20T05:00+02:00", "end": "2026-11-20T09:00"}, "start",
                 id="replay-start-not-utc"),
    pytest.param("rollback_ranker", {"to_version": "latest", "reason": "bad model"}, "to_version",
                 id="rollback-target-not-a-version"),
    pytest.param("rollback_ranker", {}, "reason", id="rollback-without-reason"),
    pytest.param("canary_ranker", {"action": "ramp", "reason": "looks good"}, "action", id="canary-action"),
])
def test_invalid_params_get_a_400_naming_the_field_and_no_run(af, dag_id, conf, field):
    af.api.wait_for_dag(dag_id)
    before = af.api.dag_runs(dag_id)
    resp = af.api.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 400, resp.text
    assert f"Invalid input for param {field}" in resp.json()["detail"]
    assert af.api.dag_runs(dag_id) == before


def test_a_backfill_with_invalid_params_is_refused_naming_the_field(af):
    resp = af.api.http.post("/backfills", json={
        "dag_id": RETRAIN, "from_date": _midnight(DAY[1]), "to_date": _midnight(DAY[3]),
        "dag_run_conf": {"window_days": 500}, "reprocess_behavior": "completed"})
    assert 400 <= resp.status_code < 500 and "window_days" in resp.text, resp.text
    assert af.api.http.get("/backfills", params={"dag_id": RETRAIN}).json()["total_entries"] == 0
    assert af.api.dag_runs(RETRAIN) == []


# ---- 2. + 3. a dry run, and a run with bad params -----------------------------------------------

@pytest.fixture(scope="module")
def first_runs(af):
    """S+3 in dry-run and S with mistakes, triggered while the DAG is paused, then unpaused (catchup off:
    the scheduler only adds yesterday, S+3, which exists)."""
    api = af.api
    dry = api.trigger(RETRAIN, logical_date=_midnight(DAY[3]), conf={"promotion_mode": "dry-run"})
    bad = api.trigger(RETRAIN, logical_date=_midnight(DAY[0]), conf={"promotion_mode": "force", "window_day": 5,
                                                                      "gate_thresholds": {"floors": "abc"}})
    api.unpause(RETRAIN)
    states = {run: api.wait(RETRAIN, run, timeout=RUN_TIMEOUT, poll=2) for run in (bad, dry)}
    return SimpleNamespace(dry=dry, bad=bad, states=states,
                           dry_window=api.xcom(RETRAIN, dry, "build_dataset") if states[dry] == "success" else None)


def test_a_dry_run_runs_every_step_and_registers_nothing(af, first_runs):
    api, run = af.api, first_runs.dry
    assert first_runs.states[run] == "success", _why(api, run)
    states = _task_states(api, run)
    assert states.pop("retriever") == "skipped", states  # the retriever registers and flips: a dry run skips it
    assert states.pop("approve") == "skipped" and set(states.values()) == {"success"}, states
    registered = api.xcom(RETRAIN, run, "register")
    assert registered["registered"] is False and registered["dry_run"] is True
    assert "/ranker/runs/" in registered["report_uri"] and _exists(af, registered["report_uri"])
    flip = api.xcom(RETRAIN, run, "flip")
    assert flip["dry_run"] is True and flip["flipped"] is False and flip["live"] is None
    assert af.registry.versions() == [] and af.registry.live() is None
    assert first_runs.dry_window["window_start"] == DAY[0]  # default window_days 14, clamped to retrain.start_date


def test_a_run_with_bad_params_fails_in_its_first_task_naming_each_param(af, first_runs):
    api, run = af.api, first_runs.bad
    assert first_runs.states[run] == "failed"
    states = _task_states(api, run)
    assert states["check_params"] == "failed"
    assert {s for t, s in states.items() if t != "check_params"} == {"upstream_failed"}
    log = _log(api, run, "check_params")
    assert "param 'force_reason': required with promotion_mode=force" in log
    assert "param 'window_day': unknown param" in log
    assert "param 'gate_thresholds': floors: Input should be a valid dictionary (got 'abc')" in log
    assert "TypeError" not in log and "dictionary update sequence" not in log  # what it raised before


# ---- 4. + 5. a backfill over a day that already ran, then its approval ---------------------------

@pytest.fixture(scope="module")
def backfill(af, first_runs):
    """Backfill S+1..S+3 with BACKFILL_CONF, re-running completed days; Reject S+3's approval."""
    api = af.api
    created = api.create_backfill(RETRAIN, from_date=_midnight(DAY[1]), to_date=_midnight(DAY[3]),
                                  conf=BACKFILL_CONF, reprocess="completed", max_active_runs=1)
    runs = _runs_by_day(api, DAY[1], DAY[2], DAY[3])
    for day in (DAY[1], DAY[2]):
        assert api.wait(RETRAIN, runs[day], timeout=RUN_TIMEOUT, poll=2) == "success", _why(api, runs[day])
    s3 = runs[DAY[3]]
    _wait_for_question(api, s3, timeout=RUN_TIMEOUT)
    request = api._call("GET", f"/dags/{RETRAIN}/dagRuns/{s3}/taskInstances/approve/-1/hitlDetails")
    _answer(api, s3, "Reject")
    assert api.wait(RETRAIN, s3, timeout=300, poll=1) == "success", _why(api, s3)
    return SimpleNamespace(id=created["id"], runs=runs, request=request,
                           rejected=api.xcom(RETRAIN, s3, "approve"), live_after_reject=af.registry.live())


def test_the_backfill_applies_its_params_to_every_run_including_the_day_that_already_ran(af, first_runs, backfill):
    api = af.api
    assert backfill.runs[DAY[3]] == first_runs.dry  # the dry-run's run, re-run: same run, new conf
    for day, run in backfill.runs.items():
        details = api.http.get(f"/dags/{RETRAIN}/dagRuns/{run}").json()
        assert details["conf"] == BACKFILL_CONF, day
        assert details["run_type"] == "backfill" and details["state"] == "success", day
        checked = api.xcom(RETRAIN, run, "check_params")
        assert {k: checked[k] for k in BACKFILL_CONF} == BACKFILL_CONF, day
        assert checked["promotion_mode"] == "gate", day  # the dry run's mode is gone with its conf
    s1 = _task_states(api, backfill.runs[DAY[1]])  # 2 days of history with window 3: nothing to train
    assert s1["build_dataset"] == "skipped" and s1["flip"] == "skipped"
    # the training window follows window_days=3: S..S+2 for S+2; S+1..S+3 for S+3, which had S..S+3 before
    assert api.xcom(RETRAIN, backfill.runs[DAY[2]], "build_dataset")["window_start"] == DAY[0]
    assert api.xcom(RETRAIN, backfill.runs[DAY[3]], "build_dataset")["window_start"] == DAY[1]
    assert first_runs.dry_window["window_start"] == DAY[0]
    # typed floors 0 + allowed regression 1: both candidates pass; S+2 was the first model, flipped at once
    first = api.xcom(RETRAIN, backfill.runs[DAY[2]], "flip")
    assert first["flipped"] and first["version"].startswith(DAY[2]) and first["previous"] is None
    gate = api.xcom(RETRAIN, backfill.runs[DAY[3]], "gate")
    assert gate["promotable"] and gate["approval"]["required"] and gate["champion"] == first["version"]
    assert orjson.loads(af.store.get(af.settings.s3.models_bucket, _key(gate["gate_uri"])).body)["thresholds"][
        "floors"] == {"auc": 0.0, "ndcg@10": 0.0}
    done = api.backfill(backfill.id)
    assert done["dag_run_conf"] == BACKFILL_CONF and done["reprocess_behavior"] == "completed"


def test_the_approval_request_shows_the_comparison_and_links_the_report(af, backfill):
    req = backfill.request
    assert req["options"] == ["Approve", "Reject"] and req["defaults"] == ["Reject"] and req["params"] == {}
    gate = af.api.xcom(RETRAIN, backfill.runs[DAY[3]], "gate")
    assert req["subject"] == f"Promote {gate['version']} over {gate['champion']}?"
    assert "| ndcg@10 |" in req["body"] and "position-debiased" in req["body"]  # the gate's compared metric
    assert f"/dags/{RETRAIN}/runs/" in req["body"] and f"versions/{gate['version']}/report.html" in req["body"]


def test_a_rejected_candidate_is_not_promoted_and_the_decision_is_recorded(af, backfill):
    run = backfill.runs[DAY[3]]
    assert _task_states(af.api, run)["flip"] == "skipped"
    record = backfill.rejected
    assert record["decision"] == "rejected" and record["by"] == "admin" and record["chosen"] == ["Reject"]
    assert orjson.loads(af.store.get(af.settings.s3.models_bucket, _key(record["uri"])).body) == {
        k: v for k, v in record.items() if k != "uri"}
    assert backfill.live_after_reject.version.startswith(DAY[2])


def test_no_answer_until_the_timeout_counts_as_reject_then_an_approval_flips(af, backfill):
    api, run = af.api, backfill.runs[DAY[3]]
    before = af.registry.live()
    _clear(api, run, "approve")
    _wait_task(api, run, "approve", {"awaiting_input"}, timeout=300)
    stuck = api.stuck(RETRAIN, run)  # what a wait timing out now would say
    assert "approve=awaiting_input" in stuck and "scheduler healthy" in stuck, stuck
    assert api.wait(RETRAIN, run, timeout=300, poll=1) == "success"  # nobody answers: 150 s timeout
    timed_out = api.xcom(RETRAIN, run, "approve")
    assert timed_out["decision"] == "timed out" and timed_out["chosen"] == ["Reject"]
    assert _task_states(api, run)["flip"] == "skipped" and af.registry.live().etag == before.etag
    _clear(api, run, "flip")  # the flip alone re-run by an operator: the recorded timeout still holds
    assert api.wait(RETRAIN, run, timeout=300, poll=1) == "success", _why(api, run)
    assert _task_states(api, run)["flip"] == "skipped" and af.registry.live().etag == before.etag

    _clear(api, run, "approve")
    _wait_for_question(api, run, timeout=300)
    _answer(api, run, "Approve")
    assert api.wait(RETRAIN, run, timeout=300, poll=1) == "success", _why(api, run)
    # a skipped flip keeps the XCom of an earlier try (the dry run's): its state says whether it ran
    assert _task_states(api, run)["flip"] == "success", (_why(api, run), api.xcom(RETRAIN, run, "approve"))
    flipped = api.xcom(RETRAIN, run, "flip")
    live = af.registry.live()
    assert flipped["flipped"] and live.version == flipped["version"] and live.version.startswith(DAY[3])
    assert live.pointer["previous"] == before.version and live.pointer["action"] == "promote"
    assert live.pointer["reason"].endswith("; approved by admin")


# ---- 6. force, on the library ---------------------------------------------------------------------

def test_force_makes_a_blocked_candidate_live_and_records_why(af, backfill):
    settings, ds = af.settings, DAY[2]
    promotion.evaluate_candidate(ds=ds, settings=settings)  # against the champion live now
    live = af.registry.live()
    blocked = promotion.gate_candidate(ds=ds, overrides={"floors": {"auc": 0.999}}, mode="force", settings=settings)
    assert not blocked.promotable and not blocked.approval.required
    with pytest.raises(PromotionBlocked, match="needs a force_reason"):
        flip_pointer(ds=ds, gate=blocked, promoted_by="test", mode="force", settings=settings)
    with pytest.raises(PromotionBlocked, match="blocked"):
        flip_pointer(ds=ds, gate=blocked, promoted_by="test", mode="gate", settings=settings)
    assert af.registry.live().etag == live.etag
    result = flip_pointer(ds=ds, gate=blocked, promoted_by="test", mode="force",
                          force_reason="rollback of a bad feature", settings=settings)
    pointer = af.registry.live().pointer
    assert result.flipped and result.action == "force" and pointer["version"] == blocked.version
    assert pointer["action"] == "force" and pointer["previous"] == live.version
    assert pointer["reason"].startswith(f"retrain {ds}: FORCED despite the gate: rollback of a bad feature")
    assert "below the floor 0.999" in pointer["reason"]
    assert af.registry.history()[-1] == pointer


# ---- helpers ---------------------------------------------------------------------------------------

def _task_states(api: AirflowApi, run: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in api.task_instances(RETRAIN, run)}


def _why(api: AirflowApi, run: str) -> str:
    """Task states and the end of each failed task's log, for an assertion message."""
    states = _task_states(api, run)
    failed = [t for t, s in states.items() if s == "failed"]
    return f"{states}\n" + "\n".join(f"--- {t}: {_log(api, run, t)[-3000:]}" for t in failed)


def _runs_by_day(api: AirflowApi, *days: str, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {r["logical_date"][:10]: r for r in api.dag_runs(RETRAIN)}
        if all(d in runs and runs[d]["run_type"] == "backfill" for d in days):
            return {d: runs[d]["dag_run_id"] for d in days}
        time.sleep(2)
    raise AssertionError(f"backfill runs for {days} not there after {timeout}s: {sorted(runs)}")


def _wait_task(api: AirflowApi, run: str, task: str, states: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = _task_states(api, run)
        if current.get(task) in states:
            return
        if api.run_state(RETRAIN, run) in ("success", "failed"):
            raise AssertionError(f"{run} finished before {task} reached {states}: {current}")
        time.sleep(1)
    raise AssertionError(f"{task} of {run} not in {states} after {timeout}s: {_task_states(api, run)}")


def _wait_for_question(api: AirflowApi, run: str, timeout: float) -> None:
    """Until the approve task asked and parked itself (its log says so; then 2 s more). An answer sooner makes
    Airflow 3.3.2's race below likelier: the scheduler has not yet handled the parked attempt's exit."""
    deadline = time.monotonic() + timeout
    _wait_task(api, run, "approve", {"awaiting_input"}, timeout=timeout)
    while time.monotonic() < deadline:
        ti = next(t for t in api.task_instances(RETRAIN, run) if t["task_id"] == "approve")
        log = api.http.get(f"/dags/{RETRAIN}/dagRuns/{run}/taskInstances/approve/logs/{ti['try_number']}",
                           params={"full_content": True}, headers={"Accept": "application/json"})
        if ti["state"] == "awaiting_input" and "Pausing task as AWAITING_INPUT" in log.text:
            time.sleep(2)
            return
        time.sleep(1)
    raise AssertionError(f"approve of {run} did not park within {timeout}s")


def _answer(api: AirflowApi, run: str, option: str, *, times: int = 3) -> None:
    """Answer, and again if asked again, as an operator would, until the approve task acted on the answer.

    Airflow 3.3.2 can fail the attempt an answer resumed (the scheduler handles the parked attempt's exit after
    the answer). If that attempt recorded the answer, its retry acts on it (PromotionApproval.execute); if it
    was stopped before (seen 2026-12-08: failed while still queued, 0.7 s after the answer), the retry asks again."""
    url = f"/dags/{RETRAIN}/dagRuns/{run}/taskInstances/approve/-1/hitlDetails"
    for attempt in range(times):
        resp = api.http.patch(url, json={"chosen_options": [option]})
        assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = _task_states(api, run).get("approve")
            if state == "success":
                ti = next(t for t in api.task_instances(RETRAIN, run) if t["task_id"] == "approve")
                print(f"approve of {run}: {option} acted on at try {ti['try_number']}")
                return
            if state in ("failed", "upstream_failed"):
                raise AssertionError(f"approve of {run} {state} after {option}: {_why(api, run)}")
            if state == "awaiting_input" and not api.http.get(url).json().get("response_received"):
                print(f"approve of {run} asked again after answer {attempt + 1} ({option}): answering again")
                _wait_for_question(api, run, timeout=300)
                break
            time.sleep(1)
        else:
            raise AssertionError(f"approve of {run} still {_task_states(api, run)} 300 s after {option}")
    raise AssertionError(f"approve of {run} asked {times} times after {option} was answered")


def _clear(api: AirflowApi, run: str, task: str) -> None:
    resp = api.http.post(f"/dags/{RETRAIN}/clearTaskInstances", json={
        "dry_run": False, "dag_run_id": run, "task_ids": [task], "include_downstream": True, "only_failed": False})
    assert resp.status_code == 200, resp.text


def _log(api: AirflowApi, run: str, task: str) -> str:
    resp = api.http.get(f"/dags/{RETRAIN}/dagRuns/{run}/taskInstances/{task}/logs/1", params={"full_content": True},
                        headers={"Accept": "application/json"})
    if resp.status_code != 200:
        raise AirflowApiError(f"log of {task} in {run}: {resp.status_code} {resp.text[:300]}")
    return resp.text


def _key(uri: str) -> str:
    return uri.split("/", 3)[3]


def _exists(af, uri: str) -> bool:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return af.store.get(bucket, key) is not None
