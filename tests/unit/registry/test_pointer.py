"""Pure parts of the registry: the pointer diff a dry run prints, history rows, version identity."""

from __future__ import annotations

from datetime import date

import pytest

from feedloop.promotion.pointer_plan import FlipPlan, Live
from feedloop.promotion.registry import Registry, VersionConflict, entries, in_effect_from, version_day

OLD = {"seq": 4, "version": "2026-11-05-aa", "sha256": "1", "previous": "2026-11-04-bb", "reason": "gate",
       "promoted_by": "dag", "promoted_at": "2026-11-06T00:10:00.000Z", "action": "promote"}


def test_a_plan_diff_lists_only_the_fields_that_change():
    new = {**OLD, "seq": 5, "version": "2026-11-04-bb", "previous": "2026-11-05-aa", "action": "rollback"}
    assert FlipPlan(Live(OLD, '"etag"'), new).diff() == {
        "seq": {"from": 4, "to": 5}, "version": {"from": "2026-11-05-aa", "to": "2026-11-04-bb"},
        "previous": {"from": "2026-11-04-bb", "to": "2026-11-05-aa"}, "action": {"from": "promote", "to": "rollback"}}


def test_a_first_plan_diffs_against_nothing():
    assert FlipPlan(None, {"seq": 1, "version": "v"}).diff() == {"seq": {"from": None, "to": 1},
                                                                 "version": {"from": None, "to": "v"}}


def test_history_rows_read_old_to_new():
    assert entries([OLD]) == [{"seq": 4, "at": "2026-11-06T00:10:00.000Z", "from": "2026-11-04-bb",
                               "to": "2026-11-05-aa", "canary": None, "canary_percent": None, "action": "promote",
                               "by": "dag", "reason": "gate"}]


CANARY = {"version": "2026-11-06-cc", "uri": "s3://m/ranker/versions/2026-11-06-cc/", "sha256": "2", "percent": 10.0,
          "started_at": "2026-11-07T00:10:00.000Z", "started_by": "dag", "reason": "gate"}


@pytest.mark.parametrize(("pointer", "row"), [
    pytest.param({**OLD, "seq": 5, "action": "canary", "canary": CANARY},
                 {"from": "2026-11-05-aa", "to": "2026-11-05-aa", "canary": "2026-11-06-cc", "canary_percent": 10.0},
                 id="a-canary-start-keeps-the-live-version"),
    pytest.param({**OLD, "seq": 6, "action": "abort-canary", "canary": None},
                 {"from": "2026-11-05-aa", "to": "2026-11-05-aa", "canary": None, "canary_percent": None},
                 id="an-abort-keeps-the-live-version"),
    pytest.param({**OLD, "seq": 6, "version": "2026-11-06-cc", "previous": "2026-11-05-aa",
                  "action": "promote-canary", "canary": None},
                 {"from": "2026-11-05-aa", "to": "2026-11-06-cc", "canary": None, "canary_percent": None},
                 id="a-promoted-canary-is-the-new-live-version"),
])
def test_history_rows_show_the_live_version_and_the_canary_after_each_write(pointer, row):
    (got,) = entries([pointer])
    assert {k: got[k] for k in row} == row and got["action"] == pointer["action"]


def test_a_canary_plan_diff_shows_only_the_canary_and_the_write():
    new = {**OLD, "seq": 5, "action": "canary", "canary": CANARY, "promoted_by": "alice", "reason": "try it"}
    assert FlipPlan(Live(OLD, '"e"'), new).diff() == {
        "seq": {"from": 4, "to": 5}, "action": {"from": "promote", "to": "canary"},
        "promoted_by": {"from": "dag", "to": "alice"}, "reason": {"from": "gate", "to": "try it"},
        "canary": {"from": None, "to": CANARY}}


@pytest.mark.parametrize("change", [
    pytest.param({"model_sha256": "other"}, id="another-model"),
    pytest.param({"lineage": {"window": "other"}}, id="other-training-data"),
    pytest.param({"params": {"num_leaves": 7}}, id="other-params"),
])
def test_a_taken_version_id_with_other_content_is_a_conflict(change):
    existing = {"version": "v", "feature_manifest": {}, "lineage": {}, "params": {}, "model_sha256": "x",
                "registered_at": "earlier"}
    registry = Registry(store=None, bucket="b")
    assert registry.verify_identity(existing, {**existing, "registered_at": "now"}) is existing
    with pytest.raises(VersionConflict, match="already registered with a different"):
        registry.verify_identity(existing, {**existing, **change})


@pytest.mark.parametrize(("pointer", "effective"), [
    pytest.param({**OLD, "logical_date": "2026-11-05"}, "2026-11-06T00:00:00+00:00",
                 id="a-retrain-flip-serves-from-the-day-after-its-logical-date-whenever-it-ran"),
    pytest.param(OLD, "2026-11-06T00:10:00+00:00", id="a-change-by-hand-takes-effect-when-it-was-written"),
])
def test_a_pointer_entry_takes_effect_on_the_datas_clock(pointer, effective):
    assert in_effect_from(pointer).isoformat() == effective


def test_a_version_id_names_its_logical_date():
    assert version_day("2026-11-05-ab12cd34ef") == date(2026, 11, 5)
    assert version_day("hand-made") is None
