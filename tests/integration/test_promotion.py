"""The promotion steps end to end on the real embedded S3 with real LightGBM models and ONNX exports.

evaluate -> export -> gate -> register -> flip, for a first model, a better one, one that is worse in
one segment (blocked, and the Slack / email alert names the segment), one whose export fails parity
(never registered), and a rollback.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from feedloop.promotion import steps as promotion
from feedloop.airflow.promotion_tasks import run_canary
from feedloop.contract.decisions import GateResult
from feedloop.core.errors import NotApproved
from feedloop.airflow.approval import resume_event
from feedloop.promotion.approval import answer_to, record_approval
from feedloop.promotion.flip import flip_pointer
from feedloop.promotion.pointer_change import rollback
from feedloop.promotion.registration import register_candidate
from feedloop.airflow.notifier import FeedloopNotifier
from feedloop.core.errors import PromotionBlocked
from feedloop.promotion.pointer_plan import PointerRaceLost
from feedloop.promotion.registry import Registry, sha256
from tests.support import rankerdata
from tests.integration.test_validation_airflow import slack, smtp  # noqa: F401 - the receivers, reused

pytestmark = pytest.mark.integration

# The segment test gates segments only: overall may move, a segment may not.
SEGMENT_GATE = {"tolerance": 1.0, "min_support": 20}


@pytest.fixture(scope="module")
def models():
    """A passable first champion, a better one and a globex-broken one, trained once on one day of hand-made lists.

    The champion is a single tree so that "better" is better beyond doubt: the gate promotes only when the
    interval of the difference on the 240 holdout lists clears -tolerance (20 vs 60 trees was a tie there:
    +0.0013, 95% CI [-0.0060, +0.0086]; one tree: about +0.066 [+0.049, +0.083])."""
    train = rankerdata.day_frame(seed=1)
    return {"good": rankerdata.train_model(train, rounds=1), "better": rankerdata.train_model(train, rounds=60),
            "broken": rankerdata.train_model(train, rounds=60, flip_tenant="globex")}


@pytest.fixture
def env(embedded, store):
    """Settings with fresh lake and models buckets, the registry on them, and a writer of train runs."""
    lake, models_bucket = f"lake-{uuid.uuid4().hex[:8]}", f"models-{uuid.uuid4().hex[:8]}"
    for bucket in (lake, models_bucket):
        store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={"s3": embedded.s3.model_copy(
        update={"lake_bucket": lake, "models_bucket": models_bucket})})
    holdout = rankerdata.day_frame(seed=99)

    def write(ds: str, model_text: str) -> None:
        rankerdata.write_run(store, settings, ds, model_text=model_text, holdout=holdout)

    return SimpleNamespace(settings=settings, registry=Registry(store, models_bucket), write=write, store=store)


def _promote(env, ds: str, overrides: dict | None = None, canary_percent: float | None = None) -> dict:
    """Every step as the DAG runs them; returns the outputs by step."""
    s = env.settings
    out = {"evaluate": promotion.evaluate_candidate(ds=ds, settings=s),
           "export": promotion.export_candidate(ds=ds, settings=s)}
    out["gate"] = promotion.gate_candidate(ds=ds, overrides=overrides, settings=s)
    out["register"] = register_candidate(ds=ds, settings=s)
    out["flip"] = flip_pointer(ds=ds, gate=out["gate"], promoted_by=f"retrain_ranker {ds}",
                               canary_percent=canary_percent, settings=s)
    return out


def test_a_first_model_is_registered_and_made_live_and_a_rerun_changes_nothing(env, models):
    env.write("2026-11-05", models["good"])
    out = _promote(env, "2026-11-05")
    version = out["evaluate"].version
    assert version.startswith("2026-11-05-") and out["evaluate"].champion is None
    assert out["export"]["passed"] and out["export"]["max_abs_diff"] < 1e-5
    assert out["gate"].promotable
    assert out["flip"].to_dict() == {"flipped": True, "canary": False, "version": version, "evaluated": version,
                                     "previous": None, "seq": 1, "action": "promote"}

    live = env.registry.live().pointer
    onnx_bytes = env.registry.read(version, "model.onnx")
    assert live["sha256"] == sha256(onnx_bytes) and live["promoted_by"] == "retrain_ranker 2026-11-05"
    manifest = env.registry.manifest(version)
    assert {"model.txt", "model.onnx", "metrics.json", "gate.json", "report.html", "features/items.parquet",
            "features/users.parquet"} == set(manifest["artifacts"])
    for name, artifact in manifest["artifacts"].items():
        assert artifact["sha256"] == sha256(env.registry.read(version, name))
    assert manifest["feature_manifest"] == rankerdata.MANIFEST and manifest["code_version"].startswith("git:")
    assert len(manifest["sample"]["scores"]) == 8

    metrics = env.registry.read_json(version, "metrics.json")
    assert set(metrics["candidate"]["segments"]) == {"tenant_id=acme", "tenant_id=globex", "surface=feed",
                                                     "surface=search"}
    assert metrics["candidate"]["overall"]["ndcg@10"] > metrics["popularity"]["overall"]["ndcg@10"]
    assert metrics["holdout"]["rows"] == 2400 and metrics["champion"] is None
    html = env.registry.read(version, "report.html").decode()
    assert html.count("data:image/png;base64,") == 5 and "http" not in html.replace(
        env.settings.s3.endpoint_url, "").replace("http-equiv='Content-Security-Policy'", "")
    assert "<script" not in html

    again = _promote(env, "2026-11-05")
    assert again["evaluate"].version == version and again["register"] == out["register"]
    assert again["flip"].flipped is False and env.registry.live().pointer == live


def test_a_candidate_worse_in_one_segment_is_blocked_and_the_alert_names_it(env, models, slack, smtp, monkeypatch):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["broken"])
    s = env.settings
    evaluated = promotion.evaluate_candidate(ds="2026-11-06", settings=s)
    assert evaluated.champion == first
    promotion.export_candidate(ds="2026-11-06", settings=s)
    gate = promotion.gate_candidate(ds="2026-11-06", overrides=SEGMENT_GATE, settings=s)
    assert not gate.promotable and "in tenant_id=globex regressed" in gate.summary
    assert "tenant_id=acme" not in gate.summary
    registered = register_candidate(ds="2026-11-06", settings=s)
    assert registered.candidate.promotable is False  # kept for the record, never live
    with pytest.raises(PromotionBlocked) as blocked:
        flip_pointer(ds="2026-11-06", gate=gate, promoted_by="retrain_ranker 2026-11-06", settings=s)
    assert env.registry.live().version == first
    assert registered.candidate.report_uri in str(blocked.value)

    decision = env.registry.read_json(gate.version, "gate.json")
    globex = [c for c in decision["checks"] if c["scope"] == "tenant_id=globex" and not c["passed"]]
    assert globex and all(c["verdict"] == "worse" and c["high"] < c["limit"] for c in globex)

    monkeypatch.setenv("AIRFLOW_CONN_FEEDLOOP_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack[0]}/hook", "password": "T1/B1/X1"}))
    monkeypatch.setenv("AIRFLOW_CONN_FEEDLOOP_SMTP", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp[0],
         "extra": {"disable_tls": True, "disable_ssl": True}}))
    slack[1].clear(), smtp[1].clear()
    ti = SimpleNamespace(dag_id="retrain_ranker", task_id="flip_pointer", try_number=1, log_url="http://airflow/log")
    FeedloopNotifier().notify({"ti": ti, "dag": None, "run_id": "scheduled__2026-11-06",
                               "logical_date": datetime(2026, 11, 6, tzinfo=timezone.utc), "exception": blocked.value})
    (path, body), = slack[1]
    assert path == "/hook/T1/B1/X1" and "gate blocked" in body["text"] and "tenant_id=globex" in body["text"]
    (_, mail), = smtp[1]
    email_body = mail.get_payload(0).get_payload(decode=True).decode() if mail.is_multipart() else mail.get_payload()
    assert mail["Subject"].startswith("[feedloop] retrain_ranker.flip_pointer failed for 2026-11-06: gate blocked")
    assert "tenant_id=globex" in email_body and "regressed" in email_body


def test_a_better_candidate_replaces_the_champion(env, models):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    out = _promote(env, "2026-11-06", overrides={"min_support": 20})
    assert out["gate"].promotable, out["gate"].summary
    assert out["flip"].flipped and out["flip"].previous == first
    metrics = env.registry.read_json(out["flip"].version, "metrics.json")
    assert metrics["champion"]["version"] == first and metrics["champion"]["overall"]["rows"] == 2400


def test_labels_matplotlib_would_read_as_math_never_block_a_registration(env):
    """A tenant id `x$^$y` and a feature named `f_$^$noise` (both raised in matplotlib's math parser when the
    report's plots were saved): the version is registered, goes live, and its report draws every plot."""
    odd = "f_$^$noise"
    features = [{**f, "name": odd} if f["name"] == "f_noise" else f for f in rankerdata.FEATURES]

    def frame(seed: int) -> dict:
        cols = rankerdata.day_frame(seed=seed)
        cols["tenant_id"] = np.where(cols["tenant_id"] == "globex", "x$^$y", cols["tenant_id"])
        cols[odd] = cols.pop("f_noise")
        return cols

    s = env.settings
    rankerdata.write_run(env.store, s, "2026-11-05", model_text=rankerdata.train_model(frame(1), rounds=5,
                                                                                     features=features),
                         holdout=frame(99), manifest={**rankerdata.MANIFEST, "features": features})
    out = _promote(env, "2026-11-05")
    assert out["flip"].flipped and "tenant_id=x$^$y" in env.registry.read_json(
        out["flip"].version, "metrics.json")["candidate"]["segments"]
    html = env.registry.read(out["flip"].version, "report.html").decode()
    assert html.count("data:image/png;base64,") == 5 and "could not be drawn" not in html
    assert "tenant_id=x$^$y" in html


def _awaiting_approval(env, models) -> tuple[str, GateResult]:
    """A first model live, then a better candidate that needs a human's approval (margin 1: every call is close)."""
    env.settings = env.settings.model_copy(update={"promotion": env.settings.promotion.model_copy(
        update={"approval_margin": 1.0})})
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    s = env.settings
    promotion.evaluate_candidate(ds="2026-11-06", settings=s)
    promotion.export_candidate(ds="2026-11-06", settings=s)
    gate = promotion.gate_candidate(ds="2026-11-06", overrides={"min_support": 20}, settings=s)
    assert gate.promotable and gate.approval.required, gate.approval
    register_candidate(ds="2026-11-06", settings=s)
    return first, gate


def test_a_flip_that_needs_approval_honours_the_recorded_answer_whoever_runs_it(env, models):
    """The retrain DAG's flip task cleared and re-run after the approve step recorded Reject or no answer (or
    approve marked success by hand, recording nothing): the champion stays live. Only a recorded Approve flips."""
    first, gate = _awaiting_approval(env, models)
    before = env.registry.live()

    def flip():
        return flip_pointer(ds="2026-11-06", gate=gate, promoted_by="retrain_ranker", settings=env.settings)

    def answer(chosen: list[str], by: str | None, timed_out: bool = False) -> None:
        record_approval(ds="2026-11-06", version=gate.version, chosen=chosen, by=by, timed_out=timed_out,
                        settings=env.settings)

    answer(["Reject"], "alice")
    with pytest.raises(NotApproved, match=r"was rejected by alice at .*; live model unchanged"):
        flip()
    answer(["Reject"], None, timed_out=True)
    with pytest.raises(NotApproved, match=r"not approved before the approval timeout .*live model unchanged"):
        flip()
    env.store.delete(env.settings.s3.models_bucket,
                     f"ranker/runs/2026-11-06/candidates/{gate.version}/approval.json")
    with pytest.raises(PromotionBlocked, match="needs a human's Approve and none is recorded"):
        flip()
    assert env.registry.live() == before and before.version == first

    answer(["Approve"], "bob")
    flipped = flip()
    live = env.registry.live().pointer
    assert flipped.flipped and live["previous"] == first and live["reason"].endswith("; approved by bob")


def test_a_retry_of_the_approve_step_finds_only_its_own_askings_answer(env, models):
    """An answer is found again by a retry of the asking it answered (Airflow 3.3.2 can fail the attempt an answer
    resumed), never by a later asking after a clear, which must ask anew; a retry then acts as the answer did."""
    _, gate = _awaiting_approval(env, models)
    asked = "manual__2026-11-07T00:00:00+00:00 try 2"
    assert answer_to(ds="2026-11-06", version=gate.version, asked_in=asked, settings=env.settings) is None
    given = record_approval(ds="2026-11-06", version=gate.version, chosen=["Approve"], by="bob", timed_out=False,
                            settings=env.settings, asked_in=asked)
    assert answer_to(ds="2026-11-06", version=gate.version, asked_in=asked, settings=env.settings) == given
    assert answer_to(ds="2026-11-06", version=gate.version, asked_in="manual__2026-11-07T00:00:00+00:00 try 4",
                     settings=env.settings) is None
    event = resume_event(given)
    assert event["chosen_options"] == ["Approve"] and event["responded_by_user"] == {"id": "bob", "name": "bob"}
    flipped = flip_pointer(ds="2026-11-06", gate=gate, promoted_by="retrain_ranker", settings=env.settings)
    assert flipped.flipped and env.registry.live().pointer["reason"].endswith("; approved by bob")


def test_a_parity_failure_is_never_registered(env, models):
    env.settings = env.settings.model_copy(update={"promotion": env.settings.promotion.model_copy(
        update={"parity_max_abs_diff": 1e-12})})
    env.write("2026-11-05", models["good"])
    s = env.settings
    promotion.evaluate_candidate(ds="2026-11-05", settings=s)
    exported = promotion.export_candidate(ds="2026-11-05", settings=s)
    assert not exported["passed"] and exported["max_abs_diff"] > 1e-12
    gate = promotion.gate_candidate(ds="2026-11-05", settings=s)
    assert not gate.promotable and "ONNX parity" in gate.summary
    with pytest.raises(PromotionBlocked, match="is not registered: ONNX parity max"):
        register_candidate(ds="2026-11-05", settings=s)
    assert env.registry.versions() == [] and env.registry.live() is None


def test_rollback_restores_the_previous_version_and_records_it(env, models):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    second = _promote(env, "2026-11-06", overrides={"min_support": 20})["flip"].version
    dry = rollback(to=None, reason="CTR down 8%", by="cli alice", dry_run=True, settings=env.settings)
    assert dry["diff"]["version"] == {"from": second, "to": first} and env.registry.live().version == second
    done = rollback(to=None, reason="CTR down 8%", by="cli alice", settings=env.settings)
    assert (done["from"], done["to"]) == (second, first)
    live = env.registry.live().pointer
    assert (live["version"], live["action"], live["reason"], live["sha256"]) == (
        first, "rollback", "CTR down 8%", sha256(env.registry.read(first, "model.onnx")))
    assert [(h["version"], h["action"]) for h in env.registry.history()] == [
        (first, "promote"), (second, "promote"), (first, "rollback")]
    assert orjson.loads(env.store.get(env.settings.s3.models_bucket, "ranker/history/0000000003.json").body) == live


def test_the_model_cli_lists_shows_and_rolls_back(env, models, monkeypatch, capsys):
    from feedloop.ops.cli import main

    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    second = _promote(env, "2026-11-06", overrides={"min_support": 20})["flip"].version
    monkeypatch.setenv("FEEDLOOP_S3__MODELS_BUCKET", env.settings.s3.models_bucket)
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        run.err = captured.err
        return code, captured.out

    code, out = run("-o", "json", "model", "list")
    assert code == 0 and [(r["version"], r["live"]) for r in json.loads(out)] == [(first, ""), (second, "*")]
    code, out = run("model", "list")
    assert code == 0 and f"{second}" in [line.split()[1] for line in out.splitlines() if line.startswith("*")]
    code, out = run("-o", "json", "model", "show", first)
    assert code == 0 and json.loads(out)["report"].endswith(f"/ranker/versions/{first}/report.html")
    assert run("model", "show", "nope")[0] == 1
    assert run("model", "rollback")[0] == 2  # no reason
    # the bounds the rollback DAG's params apply, from the same function: refused before S3 is touched
    for argv, named in ((("model", "rollback", "--reason", "x" * 501), "--reason"),
                        (("model", "rollback", "--to", "../../etc/passwd", "--reason", "bad CTR"), "--to"),
                        (("model", "canary", "latest", "--percent", "5", "--reason", "try it"), "VERSION")):
        assert run(*argv)[0] == 2 and named in run.err and len(run.err) < 400, (argv, run.err)
    assert env.registry.live().version == second and len(env.registry.history()) == 2
    code, out = run("model", "rollback", "--dry-run")
    assert code == 0 and out.startswith(f"would roll back {second} -> {first}")
    assert env.registry.live().version == second
    code, out = run("-o", "json", "model", "rollback", "--reason", "bad CTR")
    assert code == 0 and json.loads(out)["to"] == first and env.registry.live().version == first
    code, out = run("-o", "json", "model", "history")
    assert [(h["to"], h["action"], h["reason"]) for h in json.loads(out)][-1] == (first, "rollback", "bad CTR")
    assert json.loads(out)[-1]["by"].startswith("cli ")


@pytest.mark.airflow
def test_the_rollback_dag_restores_the_previous_version(env, models, airflow_cli):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    second = _promote(env, "2026-11-06", overrides={"min_support": 20})["flip"].version
    done = airflow_cli("dags", "test", "rollback_ranker", "-c", json.dumps({"reason": "serving errors after flip"}),
                       env_extra={"FEEDLOOP_S3__MODELS_BUCKET": env.settings.s3.models_bucket})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    live = env.registry.live().pointer
    assert (live["version"], live["previous"], live["action"], live["reason"]) == (
        first, second, "rollback", "serving errors after flip")
    assert live["promoted_by"].startswith("rollback_ranker manual__")


def test_a_backfilled_day_is_judged_against_the_model_that_served_it_and_never_moves_the_pointer_back(env, models):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    s = env.settings
    env.write("2026-11-06", models["better"])
    promotion.evaluate_candidate(ds="2026-11-06", settings=s)
    promotion.export_candidate(ds="2026-11-06", settings=s)
    late_gate = promotion.gate_candidate(ds="2026-11-06", overrides={"min_support": 20}, settings=s)
    assert late_gate.champion == first
    register_candidate(ds="2026-11-06", settings=s)
    env.write("2026-11-07", rankerdata.train_model(rankerdata.day_frame(seed=2), rounds=60))
    third = _promote(env, "2026-11-07", overrides={"min_support": 20})
    assert third["evaluate"].champion == first  # 11-06's candidate never went live: day 7 was served by first
    third = third["flip"].version
    live = env.registry.live().pointer
    assert (live["version"], live["logical_date"]) == (third, "2026-11-07")

    # The backfilled day 6 is still judged against the model that served day 6, never against the newer one ...
    assert promotion.evaluate_candidate(ds="2026-11-06", settings=s).champion == first
    assert promotion.gate_candidate(ds="2026-11-06", overrides={"min_support": 20}, settings=s).champion == first
    # ... and its flip does not move the pointer back to an older day's model: it records what it would have done.
    held = flip_pointer(ds="2026-11-06", gate=late_gate, promoted_by="backfill", settings=s)
    assert held.flipped is False and held.held_back and held.live == third
    assert "trained on a later day than 2026-11-06" in held.why
    staged = env.store.get_json(s.s3.models_bucket, f"ranker/runs/2026-11-06/candidates/{late_gate.version}/flip.json")
    assert staged == held.to_dict() and env.registry.live().pointer == live
    # promotion_mode=force moves it back, with the reason recorded.
    forced = flip_pointer(ds="2026-11-06", gate=late_gate, promoted_by="operator", mode="force",
                          force_reason="day 7's model breaks search", settings=s)
    assert forced.flipped and forced.action == "force" and env.registry.live().version == late_gate.version


def test_a_pointer_change_after_evaluation_refuses_the_flip_and_a_rerun_evaluates_again(env, models):
    env.write("2026-11-03", models["good"])
    oldest = _promote(env, "2026-11-03")["flip"].version
    env.write("2026-11-05", models["better"])
    champion = _promote(env, "2026-11-05", overrides={"min_support": 20})["flip"].version
    s = env.settings
    env.write("2026-11-06", rankerdata.train_model(rankerdata.day_frame(seed=2), rounds=60))
    assert promotion.evaluate_candidate(ds="2026-11-06", settings=s).champion == champion
    promotion.export_candidate(ds="2026-11-06", settings=s)
    gate = promotion.gate_candidate(ds="2026-11-06", overrides={"min_support": 20, "tolerance": 1.0}, settings=s)
    register_candidate(ds="2026-11-06", settings=s)
    rollback(to=oldest, reason="serving errors", by="alice", settings=s)
    with pytest.raises(PointerRaceLost, match=f"live model is {oldest}, not {champion}"):
        flip_pointer(ds="2026-11-06", gate=gate, promoted_by="late run", settings=s)
    assert env.registry.live().version == oldest
    # The re-run: the champion of day 6 is still the model that served it; the flip now expects the rolled-back one.
    assert promotion.evaluate_candidate(ds="2026-11-06", settings=s).champion == champion
    gate = promotion.gate_candidate(ds="2026-11-06", overrides={"min_support": 20, "tolerance": 1.0}, settings=s)
    flipped = flip_pointer(ds="2026-11-06", gate=gate, promoted_by="re-run", settings=s)
    assert flipped.flipped and flipped.previous == oldest


def _cli(capsys):
    from feedloop.ops.cli import main

    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_the_flip_step_in_canary_mode_starts_a_canary_once_and_the_operator_promotes_it(env, models, monkeypatch,
                                                                                          capsys):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05", canary_percent=10)["flip"]
    assert first.flipped and not first.canary  # no live model yet: nothing to share traffic with
    env.write("2026-11-06", models["better"])
    out = _promote(env, "2026-11-06", overrides={"min_support": 20}, canary_percent=10)
    second = out["gate"].version
    assert out["flip"].to_dict() == {"flipped": False, "canary": True, "started": True, "version": second,
                                     "percent": 10.0, "live": first.version, "seq": 2}
    live = env.registry.live().pointer
    assert (live["version"], live["canary"]["version"], live["canary"]["percent"], live["action"]) == (
        first.version, second, 10.0, "canary")
    assert live["canary"]["sha256"] == sha256(env.registry.read(second, "model.onnx"))
    assert live["canary"]["started_by"] == "retrain_ranker 2026-11-06"

    monkeypatch.setenv("FEEDLOOP_S3__MODELS_BUCKET", env.settings.s3.models_bucket)
    run = _cli(capsys)
    code, text, _ = run("model", "canary", second, "--percent", "40", "--reason", "clean at 10%")
    assert code == 0 and text.startswith(f"canary {second}: 10% -> 40% of users")
    rerun = flip_pointer(ds="2026-11-06", gate=out["gate"], promoted_by="retry", canary_percent=10,
                         settings=env.settings)
    assert rerun.started is False and rerun.percent == 40.0  # the re-run neither restarts nor undoes the ramp
    assert env.registry.live().pointer["seq"] == 3

    code, text, _ = run("-o", "json", "model", "promote-canary", "--reason", "CTR +3% on the canary")
    done = json.loads(text)
    assert code == 0 and (done["action"], done["live"], done["canary"], done["was"]["live"]) == (
        "promote-canary", second, None, first.version)
    live = env.registry.live().pointer
    assert (live["version"], live["previous"], live["canary"], live["reason"]) == (
        second, first.version, None, "CTR +3% on the canary")
    assert flip_pointer(ds="2026-11-06", gate=out["gate"], promoted_by="retry", canary_percent=10,
                        settings=env.settings).flipped is False
    assert env.registry.live().pointer["seq"] == 4


@pytest.mark.parametrize("canary_percent", [pytest.param(10, id="canary-mode"), pytest.param(0, id="gate-mode")])
def test_a_new_candidate_is_blocked_while_another_canary_runs(env, models, canary_percent):
    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    canary = _promote(env, "2026-11-06", overrides={"min_support": 20}, canary_percent=25)["gate"].version
    onnx = env.registry.read(canary, "model.onnx")
    env.registry.register(version="2026-11-07-x", files={"model.txt": b"tree", "model.onnx": onnx},
                          manifest={**env.registry.manifest(canary), "lineage": {"day": "2026-11-07"}})
    gate = GateResult(version="2026-11-07-x", promotable=True, champion=first, summary="passed")
    before = env.registry.live().pointer
    with pytest.raises(PromotionBlocked, match=f"2026-11-07-x for 2026-11-07 not promoted: a canary of {canary} at "
                                               "25% is running: promote it .* or abort it"):
        flip_pointer(ds="2026-11-07", gate=gate, promoted_by="retrain_ranker 2026-11-07",
                     canary_percent=canary_percent, settings=env.settings)
    assert env.registry.live().pointer == before


def test_the_canary_cli_and_dag_task_start_ramp_list_and_abort(env, models, monkeypatch, capsys):
    from airflow.sdk.exceptions import AirflowFailException

    env.write("2026-11-05", models["good"])
    first = _promote(env, "2026-11-05")["flip"].version
    env.write("2026-11-06", models["better"])
    out = _promote(env, "2026-11-06", overrides={"min_support": 20})
    second = out["flip"].version
    rollback(to=first, reason="back", by="test", settings=env.settings)  # second: registered, not live
    monkeypatch.setenv("FEEDLOOP_S3__MODELS_BUCKET", env.settings.s3.models_bucket)
    run = _cli(capsys)

    with pytest.raises(SystemExit) as usage:
        run("model", "canary", second, "--percent", "0", "--reason", "r")
    assert usage.value.code == 2
    assert run("model", "canary", second, "--percent", "10")[0] == 2  # no reason
    code, text, err = run("model", "canary", second, "--percent", "10", "--reason", "r")
    assert code == 2 and "--reason: required: at least 3 characters" in err  # the bound the canary DAG applies
    code, text, err = run("model", "canary", first, "--percent", "10", "--reason", "try it")
    assert code == 1 and f"{first} is already live" in err
    code, text, _ = run("-o", "json", "model", "canary", second, "--percent", "12.5", "--dry-run")
    dry = json.loads(text)
    assert code == 0 and dry["dry_run"] and dry["canary"]["percent"] == 12.5 and dry["diff"]["canary"]["from"] is None
    assert env.registry.live().canary is None
    code, text, _ = run("-o", "json", "model", "canary", second, "--percent", "12.5", "--reason", "new features")
    started = json.loads(text)
    assert code == 0 and (started["live"], started["canary"]["version"], started["seq"]) == (first, second, 4)
    assert env.registry.live().pointer["canary"] == started["canary"]

    code, text, _ = run("-o", "json", "model", "list")
    assert [(r["version"], r["live"], r["canary"]) for r in json.loads(text)] == [
        (first, "*", None), (second, "", 12.5)]
    code, text, _ = run("model", "list")
    assert code == 0 and [line.split()[:2] for line in text.splitlines() if second in line] == [["12.5%", second]]
    assert json.loads(run("-o", "json", "model", "show", second)[1])["canary_percent"] == 12.5
    code, text, _ = run("-o", "json", "model", "history")
    assert [(h["to"], h["canary"], h["canary_percent"], h["action"]) for h in json.loads(text)][-1] == (
        first, second, 12.5, "canary")
    code, text, _ = run("model", "history")
    assert f"{second} @ 12.5%" in text

    code, text, _ = run("model", "abort-canary", "--dry-run")
    assert code == 0 and text.startswith(f"dry run, would do: aborted canary {second}; live stays {first}")
    with pytest.raises(AirflowFailException, match="reason: required: at least 3 characters"):
        run_canary(params={"action": "promote", "reason": "  "}, run_id="manual__1")
    assert env.registry.live().canary["version"] == second
    aborted = run_canary(params={"action": "abort", "reason": "p99 up"}, run_id="manual__2")
    assert (aborted["action"], aborted["live"], aborted["canary"]) == ("abort-canary", first, None)
    live = env.registry.live().pointer
    assert (live["version"], live["canary"], live["promoted_by"], live["reason"]) == (
        first, None, "canary_ranker manual__2", "p99 up")
    code, _, err = run("-o", "json", "model", "abort-canary", "--reason", "again")
    assert code == 1 and "no canary is running: nothing to abort" in err
    with pytest.raises(AirflowFailException, match="no canary is running: nothing to promote"):
        run_canary(params={"action": "promote", "reason": "go on"}, run_id="manual__3")


def test_a_changed_feature_set_is_held_by_the_gate_and_force_promotes_it(env, models):
    """The champion needs a column the new datasets no longer have (f_quality became f_quality_v2):
    it cannot be scored on the candidate's rows, so nothing is compared; the gate says so and how to
    promote, and promotion_mode=force makes the candidate live, its report naming the reason."""
    env.write("2026-11-05", models["good"])
    champion = _promote(env, "2026-11-05")["flip"].version
    renamed = [{**f, "column": "f_quality_v2"} if f["name"] == "f_quality" else f for f in rankerdata.FEATURES]
    holdout = rankerdata.day_frame(seed=99)
    holdout["f_quality_v2"] = holdout.pop("f_quality")
    ds, s = "2026-11-06", env.settings
    rankerdata.write_run(env.store, s, ds, model_text=models["better"], holdout=holdout,
                         manifest={**rankerdata.MANIFEST, "features": renamed})
    evaluated = promotion.evaluate_candidate(ds=ds, settings=s)
    assert evaluated.champion == champion and evaluated.overall["auc"] > 0.6
    promotion.export_candidate(ds=ds, settings=s)
    gate = promotion.gate_candidate(ds=ds, mode="force", settings=s)
    assert not gate.promotable and gate.champion == champion
    assert f"champion {champion} needs feature column(s) this holdout lacks: f_quality" in gate.summary
    assert "promote with promotion_mode=force and a force_reason" in gate.summary
    with pytest.raises(PromotionBlocked, match="f_quality"):
        flip_pointer(ds=ds, gate=gate, promoted_by="retrain_ranker", settings=s)
    registered = register_candidate(ds=ds, mode="force", settings=s)
    flip = flip_pointer(ds=ds, gate=gate, promoted_by="retrain_ranker", mode="force",
                        force_reason="f_quality v2: the champion's feature is gone", settings=s)
    assert flip.flipped and flip.previous == champion and env.registry.live().version == gate.version
    metrics = env.registry.read_json(gate.version, "metrics.json")
    assert metrics["champion"]["version"] == champion and "f_quality" in metrics["champion"]["unscorable"]
    report = env.store.get(s.s3.models_bucket, registered.candidate.report_uri.split("/", 3)[3]).body.decode()
    assert "BLOCKED" in report and "needs feature column(s) this holdout lacks: f_quality" in report
    assert "cannot be scored on these rows" in report and "<td>None</td>" not in report
