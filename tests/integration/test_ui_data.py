"""What the Airflow UI pages read and write, on the real embedded S3 (the pages themselves: tests/browser).

The version catalog (cached summaries, history rows), pointer changes from a page (compare-and-swap,
stale-page refusal), which version a retrain run shows, and hour-partition states.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import orjson
import pytest

from feedloop import quality
from feedloop.core.config import load_settings
from feedloop.core.layout import HourPartition
from feedloop.quality import overview
from feedloop.promotion.pointer_plan import InvalidPointerChange, RegistryError
from feedloop.promotion.registry import Registry
from feedloop.ops.ui.models import Catalog, change_pointer
from feedloop.promotion.pointer_change import StalePage
from feedloop.ops.ui.runs import run_model
from tests.support import lakedata

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(store) -> Registry:
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    return Registry(store, bucket)


def _register(registry: Registry, version: str, *, champion: str | None = None, auc: float = 0.7,
              parity: bool = True, window: tuple[str, str] | None = ("2026-11-01", "2026-11-05"),
              registered_at: str = "01:00:00") -> None:
    lineage = {"window_start": window[0], "window_end": window[1]} if window else {"events": 12}
    manifest = {"logical_date": version[:10], "registered_at": f"{version[:10]}T{registered_at}Z", "lineage": lineage,
                "parity": {"passed": parity}, "metrics": {"auc": auc, "ndcg@10": 0.5},
                "gate": {"promotable": True, "champion": champion, "summary": "ok"}}
    metrics = {"champion": champion and {"version": champion, "overall": {"auc": 0.69, "ndcg@10": 0.52}}}
    registry.register(version=version, manifest=manifest, files={
        "model.txt": version.encode(), "model.onnx": b"onnx-" + version.encode(), "metrics.json": orjson.dumps(metrics),
        "report.html": f"<html><body><h1>Ranker {version}</h1></body></html>".encode()})


def test_the_catalog_lists_versions_newest_first_with_deltas_against_the_champion_of_their_day(registry):
    _register(registry, "2026-11-05-aaaa")
    _register(registry, "2026-11-06-bbbb", champion="2026-11-05-aaaa", auc=0.72, window=None)
    _register(registry, "2026-11-04-zzzz", parity=False)
    catalog = Catalog()
    rows = catalog.versions(registry, catalog.version_ids(registry))
    assert [r.version for r in rows] == ["2026-11-06-bbbb", "2026-11-05-aaaa", "2026-11-04-zzzz"]
    assert [r.servable for r in rows] == [True, True, False]  # a failed ONNX parity can never be live
    newest, first, _ = rows
    assert newest.champion == "2026-11-05-aaaa"
    assert newest.delta_auc == pytest.approx(0.03) and newest.delta_ndcg == pytest.approx(-0.02)
    assert newest.window == (None, None) and first.window == ("2026-11-01", "2026-11-05")
    assert first.champion is None and first.delta_auc is None


def test_a_version_being_registered_is_left_out_until_its_manifest_exists(registry):
    catalog = Catalog()
    registry.store.put(registry.bucket, registry.version_key("2026-11-07-cccc", "model.onnx"), b"onnx-2026-11-07-cccc")
    assert catalog.version_ids(registry) == ["2026-11-07-cccc"]
    assert catalog.versions(registry, ["2026-11-07-cccc"]) == []
    _register(registry, "2026-11-07-cccc")
    assert [r.version for r in catalog.versions(registry, ["2026-11-07-cccc"])] == ["2026-11-07-cccc"]


def test_summaries_are_read_once_per_version(registry):
    """Versions are immutable: a second view reads no manifest (deleted here to prove it)."""
    catalog = Catalog()
    _register(registry, "2026-11-05-aaaa")
    assert catalog.versions(registry, ["2026-11-05-aaaa"])[0].auc == 0.7
    registry.store.delete(registry.bucket, registry.version_key("2026-11-05-aaaa", "manifest.json"))
    assert catalog.versions(registry, ["2026-11-05-aaaa"])[0].auc == 0.7


def test_a_rollback_from_the_page_flips_through_compare_and_swap_and_enters_the_history(registry):
    for v in ("2026-11-05-aaaa", "2026-11-06-bbbb"):
        _register(registry, v)
        registry.flip(version=v, by=f"retrain_ranker scheduled__{v[:10]}", reason="gate passed")
    catalog = Catalog()
    pointer = change_pointer(registry, action="rollback", shown_seq=2, by="airflow-ui admin", reason="hurts search",
                             settings=load_settings())
    assert (pointer["version"], pointer["previous"], pointer["seq"]) == ("2026-11-05-aaaa", "2026-11-06-bbbb", 3)
    assert registry.live().pointer == pointer
    rows, total = catalog.history(registry, registry.live())
    newest = rows[0]
    assert total == 3 and [r["seq"] for r in rows] == [3, 2, 1]
    assert (newest["seq"], newest["from"], newest["to"], newest["action"], newest["by"], newest["reason"]) == \
        (3, "2026-11-06-bbbb", "2026-11-05-aaaa", "rollback", "airflow-ui admin", "hurts search")


@pytest.mark.parametrize(("shown_seq", "action", "error"), [
    pytest.param(1, "rollback", StalePage, id="a-page-showing-an-older-pointer-is-refused"),
    pytest.param(2, "promote-canary", RegistryError, id="promote-without-a-canary-is-refused"),
    pytest.param(2, "delete", RegistryError, id="an-unknown-action-is-refused"),
])
def test_refused_pointer_changes_change_nothing(registry, shown_seq, action, error):
    for v in ("2026-11-05-aaaa", "2026-11-06-bbbb"):
        _register(registry, v)
        registry.flip(version=v, by="test", reason="setup")
    before = registry.live()
    with pytest.raises(error):
        change_pointer(registry, action=action, shown_seq=shown_seq, by="airflow-ui admin", reason="why",
                       settings=load_settings())
    assert registry.live() == before


@pytest.mark.parametrize(("action", "to", "reason", "named"), [
    pytest.param("rollback", None, "x" * 501, "reason", id="a-reason-over-500-characters"),
    pytest.param("rollback", None, "   ", "reason", id="a-blank-reason"),
    pytest.param("rollback", None, "bad \ud800 model", "reason", id="a-reason-that-is-not-utf-8"),
    pytest.param("rollback", "../../etc/passwd", "bad model", "to", id="a-target-that-is-no-version-id"),
    pytest.param("rollback", "2026-11-05-" + "a" * 5000, "bad model", "to", id="a-target-of-5000-characters"),
    pytest.param("abort-canary", None, "x" * 501, "reason", id="a-canary-reason-over-500-characters"),
])
def test_a_pointer_change_outside_the_bounds_the_dag_applies_is_refused_naming_the_field(registry, action, to, reason,
                                                                                         named):
    for v in ("2026-11-05-aaaa", "2026-11-06-bbbb"):
        _register(registry, v)
        registry.flip(version=v, by="test", reason="setup")
    before = registry.live()
    with pytest.raises(InvalidPointerChange) as refused:
        change_pointer(registry, action=action, shown_seq=2, by="airflow-ui admin", reason=reason, to=to,
                       settings=load_settings())
    assert [field for field, _ in refused.value.problems] == [named]
    assert registry.live() == before and len(str(refused.value)) < 400


def test_history_pages_newest_first_and_shows_a_pointer_whose_entry_is_not_written_yet(registry):
    _register(registry, "2026-11-05-aaaa")
    for k in range(5):
        registry.flip(version="2026-11-05-aaaa", by="test", reason=f"flip {k}", expect_live=True)
    registry.store.delete(registry.bucket, f"{registry.prefix}history/{5:010d}.json")  # a crash between the two writes
    catalog = Catalog()
    first, total = catalog.history(registry, registry.live(), offset=0, limit=2)
    second, _ = catalog.history(registry, registry.live(), offset=2, limit=2)
    assert total == 5 and [r["seq"] for r in first + second] == [5, 4, 3, 2]
    assert first[0]["reason"] == "flip 4"
    assert registry.store.get(registry.bucket, f"{registry.prefix}history/{5:010d}.json") is None  # read-only


def test_canary_promote_and_abort_from_the_page(registry):
    for v in ("2026-11-05-aaaa", "2026-11-06-bbbb", "2026-11-07-cccc"):
        _register(registry, v)
    registry.flip(version="2026-11-05-aaaa", by="test", reason="setup")
    for canary in ("2026-11-06-bbbb", "2026-11-07-cccc"):
        seq = registry.commit(registry.plan_canary(version=canary, percent=10, by="test", reason="try"))["seq"]
        verb = "promote-canary" if canary.endswith("bbbb") else "abort-canary"
        pointer = change_pointer(registry, action=verb, shown_seq=seq, by="airflow-ui admin", reason="looks good",
                                 settings=load_settings())
        assert pointer["canary"] is None and pointer["action"] == verb
    assert registry.live().version == "2026-11-06-bbbb"


def test_a_retrain_run_shows_its_own_version_else_the_dates_newest(registry):
    _register(registry, "2026-11-05-aaaa")
    assert run_model(registry, "2026-11-05").version == "2026-11-05-aaaa"
    registry.store.put(registry.bucket, registry.version_key("2026-11-05-bbbb", "model.txt"), b"unfinished")
    _register(registry, "2026-11-05-cccc", registered_at="02:00:00")
    newest = run_model(registry, "2026-11-05")
    assert newest.version == "2026-11-05-cccc" and newest.registered == ("2026-11-05-aaaa", "2026-11-05-cccc")
    assert run_model(registry, "2026-11-05", registered_by_run="2026-11-05-aaaa").version == "2026-11-05-aaaa"
    assert newest.report_key == registry.version_key("2026-11-05-cccc", "report.html")


def test_a_run_without_a_registered_version_says_why(registry):
    none = run_model(registry, "2026-11-08")
    assert none.version is None and "no model was trained for 2026-11-08" in none.note
    stage = f"{registry.prefix}runs/2026-11-08/candidates/2026-11-08-dddd/"
    registry.store.put_json(registry.bucket, stage + "parity.json", {"passed": False, "max_abs_diff": 0.1,
                                                                      "threshold": 1e-5})
    blocked = run_model(registry, "2026-11-08")
    assert blocked.report_key is None and "ONNX parity failed" in blocked.note
    registry.store.put(registry.bucket, stage + "report.html", b"<html><body>dry run</body></html>")
    dry = run_model(registry, "2026-11-08")
    assert (dry.version, dry.report_key) == ("2026-11-08-dddd", stage + "report.html") and "dry run" in dry.note


DAY = date(2026, 11, 5)


@pytest.fixture
def lake(embedded, store):
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    store.ensure_bucket(bucket)
    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": bucket}),
        "events": embedded.events.model_copy(update={"tenants": lakedata.TENANTS})})
    return settings, store, bucket


def test_hour_states_validated_quarantined_force_accepted_not_validated_and_missing(lake):
    settings, store, bucket = lake
    lakedata.write_good_day(store, bucket, DAY, (20, 21, 23))
    bad = [{**e, "position": 999} if i % 7 == 0 else e for i, e in enumerate(lakedata.hour_events(DAY, 22))]
    lakedata.write(store, bucket, HourPartition(DAY, 22), lakedata.lake_table(bad))
    quality.validate_day(settings, DAY, run_id="run-2",
                         acceptance=quality.Acceptance(hours=(22,), reason="known client bug", by="ops"))
    time.sleep(1.1)  # S3 times are to the second: the late object lands a second after the validation
    late = lakedata.lake_table(lakedata.hour_events(DAY, 23, tag="-late"))
    lakedata.write(store, bucket, HourPartition(DAY, 23), late,
                   chunk=1000)  # a late object after validation

    status = overview.day_status(store, bucket, DAY)
    states = {h.hour: h.state for h in status.hours}
    assert states[20] == states[21] == overview.VALIDATED
    assert states[22] == overview.FORCE_ACCEPTED and "known client bug" in status.hours[22].why
    assert states[23] == overview.NOT_VALIDATED and "re-validate" in status.hours[23].why
    assert states[0] == overview.MISSING
    assert status.run_id == "run-2" and status.index_key == "validation/dt=2026-11-05/index.html"
    assert status.counts[overview.MISSING] == 20 and status.hours[20].docs == ("rows", "metrics")
    assert overview.latest_day(store, bucket) == DAY


def test_a_quarantined_hour_names_its_failed_checks_and_an_unvalidated_day_has_no_run(lake):
    settings, store, bucket = lake
    lakedata.write_good_day(store, bucket, DAY, (23,))
    bad = [{**e, "position": 999} if i % 7 == 0 else e for i, e in enumerate(lakedata.hour_events(DAY, 22))]
    lakedata.write(store, bucket, HourPartition(DAY, 22), lakedata.lake_table(bad))
    with pytest.raises(quality.ValidationFailed):
        quality.validate_day(settings, DAY, run_id="run-1")
    lakedata.write_good_day(store, bucket, DAY + timedelta(days=1), (1,))

    quarantined = overview.day_status(store, bucket, DAY).hours[22]
    assert quarantined.state == overview.QUARANTINED and "position_range" in quarantined.why
    later = overview.day_status(store, bucket, DAY + timedelta(days=1))
    assert later.run_id is None and later.hours[1].state == overview.NOT_VALIDATED
    lineage = {"window_start": str(DAY), "window_end": str(DAY + timedelta(days=2))}
    window = overview.window_status(store, bucket, lineage)
    assert [d.day for d in window] == [DAY, DAY + timedelta(days=1)]
    assert overview.window_status(store, bucket, {"events": 3}) is None
