"""The closed loop's per-day table, its learning curve and the demo's resume rules, on hand-built rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedloop.ops import learning_curve
from feedloop.ops import loop_table
from feedloop.ops import stack
from feedloop.core.config import load_settings
from feedloop.ops.demo import DemoState, write_results

V1, V2, V3, V4 = "2026-12-03-aaaaaaaaaa", "2026-12-04-bbbbbbbbbb", "2026-12-05-cccccccccc", "2026-12-06-dddddddddd"


def _stats(day: str, version: str, ndcg: float, legacy: float) -> dict:
    return {"day": day, "lists": 1000, "by_version": {version: 1000}, "impressions": 12000, "clicks": 1560,
            "ndcg_sum": ndcg * 1000, "legacy_ndcg_sum": legacy * 1000, "ctr": 0.13, "ndcg": ndcg,
            "legacy_ndcg": legacy}


def _retrain(version: str, *, flip: dict | None, comparison: dict | None, champion: str | None) -> dict:
    gate = {"version": version, "promotable": bool(flip), "champion": champion, "summary": "(not parsed)"}
    if comparison is not None:
        gate["comparison"] = {"metric": "ndcg@10", "estimator": "snips-ipw", "lists": 900, **comparison}
    row = {"run": "success", "run_id": f"closed_loop__{version[:10]}",
           "tasks": {"validate": "success", "build_dataset": "success", "evaluate": "success", "gate": "success"},
           "evaluate": {"version": version, "champion": champion, "overall": {"auc": 0.61, "ndcg@10": 0.52}},
           "gate": gate}
    if flip is not None:
        row["flip"] = flip
    return row


def _audit(day: str, version: str, champion: str | None, decision: str, cand: float, champ: float | None,
           agreement: str | None) -> dict:
    return {"day": day, "candidate": version, "champion": champion, "decision": decision, "lists": 1000,
            "candidate_ndcg": cand, "champion_ndcg": champ, "logged_ndcg": 0.8, "agreement": agreement}


ROWS = [
    {"day": "2026-12-02", "stats": _stats("2026-12-02", "legacy", 0.58, 0.58), "audit": None,
     "retrain": {"run": "success", "run_id": "closed_loop__2026-12-02",
                 "tasks": {"validate": "success", "build_dataset": "skipped"}}},
    {"day": "2026-12-03", "stats": _stats("2026-12-03", "legacy", 0.581, 0.581),
     "retrain": _retrain(V1, flip={"flipped": True, "version": V1}, champion=None,
                         comparison={"candidate": 0.5, "champion": None, "diff": None, "low": None, "high": None,
                                     "verdict": "no champion"}),
     "audit": _audit("2026-12-03", V1, None, "promoted", 0.851, None, None)},
    {"day": "2026-12-04", "stats": _stats("2026-12-04", V1, 0.66, 0.58),
     "retrain": _retrain(V2, flip={"flipped": True, "version": V2}, champion=V1,
                         comparison={"candidate": 0.55, "champion": 0.52, "diff": 0.031, "low": 0.012,
                                     "high": 0.05, "verdict": "better"}),
     "audit": _audit("2026-12-04", V2, V1, "promoted", 0.874, 0.861, "agree")},
    {"day": "2026-12-05", "stats": _stats("2026-12-05", V2, 0.67, 0.58),
     "retrain": _retrain(V3, flip=None, champion=V2,
                         comparison={"candidate": 0.5, "champion": 0.56, "diff": -0.06, "low": -0.09, "high": -0.03,
                                     "verdict": "worse"}),
     "audit": _audit("2026-12-05", V3, V2, "held", 0.89, 0.87, "disagree")},
    {"day": "2026-12-06", "stats": _stats("2026-12-06", V2, 0.668, 0.579),
     "retrain": _retrain(V4, flip=None, champion=V2,
                         comparison={"candidate": 0.55, "champion": 0.551, "diff": -0.001, "low": -0.02,
                                     "high": 0.018, "verdict": "inconclusive"}),
     "audit": _audit("2026-12-06", V4, V2, "held", 0.872, 0.868, "level")},
]


def _cells(line: str) -> list[str]:
    return [c for c in line.split("  ") if c.strip()]


def test_each_row_shows_decision_ground_truth_gate_estimate_and_verdict():
    lines = loop_table.table(ROWS)
    by_day = {line[:10]: [c.strip() for c in _cells(line)] for line in lines[1:len(ROWS) + 1]}
    assert by_day["2026-12-02"][-7:] == ["-", "no training yet", "n/a", "n/a", "n/a", "n/a", "n/a"]
    assert by_day["2026-12-03"][-7:] == [V1, "PROMOTED", "0.851", "n/a", "n/a", "no champion", "n/a"]
    assert by_day["2026-12-04"][-7:] == [V2, "PROMOTED", "0.874", "0.861", "+0.031 [+0.012, +0.050]", "better",
                                         "agree"]
    assert by_day["2026-12-05"][-7:] == [V3, "held", "0.890", "0.870", "-0.060 [-0.090, -0.030]", "worse",
                                         "disagree"]
    assert by_day["2026-12-06"][-7:] == [V4, "held", "0.872", "0.868", "-0.001 [-0.020, +0.018]", "inconclusive",
                                         "level"]
    assert by_day["2026-12-04"][:6] == ["2026-12-04", V1, "1,000", "0.130", "0.660", "0.580"]
    header = _cells(lines[0])
    assert [h.strip() for h in header][-7:] == ["candidate", "decision", "GT cand", "GT champ",
                                               "gate estimate [interval]", "verdict", "truth"]


def test_a_gate_without_the_comparison_entry_shows_n_a():
    row = {**ROWS[3], "retrain": {**ROWS[3]["retrain"], "gate": {"version": V3, "promotable": False,
                                                                  "champion": V2, "summary": "x"}}}
    assert loop_table.gate_estimate(row["retrain"]) == ("n/a", "n/a")
    assert [c.strip() for c in _cells(loop_table.table([row])[1])][-3:] == ["n/a", "n/a", "disagree"]
    assert loop_table.outcome(row["retrain"]).endswith("gate estimate: n/a  -> held")


def test_the_day_line_names_the_estimator_and_the_decision():
    assert loop_table.outcome(ROWS[2]["retrain"]) == (
        f"{V2}  holdout AUC 0.610  NDCG@10 0.520  gate estimate: snips-ipw ndcg@10 +0.031 [+0.012, +0.050] better"
        "  -> PROMOTED")
    assert loop_table.decision({**ROWS[3]["retrain"], "flip": {"flipped": False, "canary": True}}) == "canary"


def test_the_agreement_summary_counts_only_decisions_against_a_champion():
    assert loop_table.agreement_summary(ROWS) == "gate vs ground truth over 3 decision(s): 1 agree, 1 disagree, 1 level"
    assert loop_table.agreement_summary(ROWS[:2]) == "gate vs ground truth: no decision against a champion yet"


def test_the_learning_curve_marks_the_versions_each_day_made_live(tmp_path: Path):
    days = loop_table.curve_days(ROWS)
    assert [d.promoted for d in days] == [None, V1, V2, None, None]
    assert [d.served for d in days] == [0.58, 0.581, 0.66, 0.67, 0.668]
    path = learning_curve.plot(days=days, path=tmp_path / "curve" / "loop.png", title="test")
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and image.shape[1] > 100


def _settings(tmp_path: Path):
    return load_settings(environ={"FEEDLOOP_STATE_DIR": str(tmp_path)})


def test_the_demo_writes_its_table_json_next_to_the_png(tmp_path: Path):
    import orjson

    result = {"start": "2026-12-02", "days": 5, "seed": 11, "table": ROWS, "live": V2, "seconds": 1.0}
    table_path, curve_path = write_results(_settings(tmp_path), result)
    assert table_path.parent == curve_path.parent == tmp_path
    assert orjson.loads(table_path.read_bytes()) == result
    assert curve_path.read_bytes()[:4] == b"\x89PNG"


def test_a_stack_resumes_only_the_days_and_seed_it_ran_with(tmp_path: Path):
    settings = _settings(tmp_path)
    first = DemoState.load(settings, 5, 11)
    first.save()
    again = DemoState.load(settings, None, None)
    assert (again.start, again.days, again.seed) == (first.start, 5, 11)
    assert DemoState.load(settings, 5, 11).seed == 11
    with pytest.raises(stack.StackError, match=r"world seed 11; `make clean` to run it for 5 days with seed 12"):
        DemoState.load(settings, None, 12)
    with pytest.raises(stack.StackError, match=r"`make clean` to run it for 21 days with seed 11"):
        DemoState.load(settings, 21, None)


def test_a_state_written_before_seeds_counts_as_the_configured_seed(tmp_path: Path):
    import orjson

    settings = _settings(tmp_path)
    (tmp_path / "demo_closed_loop.json").write_bytes(orjson.dumps({"start": "2026-12-01", "days": 7, "simulated": {}}))
    assert DemoState.load(settings, None, None).seed == settings.simulate.seed
    with pytest.raises(stack.StackError, match="make clean"):
        DemoState.load(settings, 7, settings.simulate.seed + 1)
