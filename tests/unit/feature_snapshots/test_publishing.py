"""Pure parts of feature-snapshot publishing: the definition version, the manifest, the never-backwards rule."""

from __future__ import annotations

import copy
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.features import snapshots as fs
from feedloop.features import definitions as features
from feedloop.core.pointer import Read

TENANTS = ["acme", "globex"]


def _parquet(cols: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


def _files(users: int = 3, items: int = 5) -> dict[str, bytes]:
    out = {}
    for e in features.ENTITIES:
        cols = {k: [f"{k}-{i}" for i in range(users)] for k in e.keys}
        cols.update({c: [float(i) for i in range(users)] for c in e.columns()})
        out[f"{e.name}.parquet"] = _parquet(cols)
    out["items.parquet"] = _parquet({"item_id": [f"i{i}" for i in range(items)], "topic": ["t"] * items})
    return out


def _manifest(files=None, as_of="2026-11-06", version="dv1"):
    return fs.build_manifest(files or _files(), as_of=as_of, definition_version=version, dataset_uri="s3://lake/d/",
                             dataset_content_hash="h", tenants=TENANTS)


# ---- definition version -----------------------------------------------------------------------------

def test_the_definition_version_is_stable_and_ignores_objective_and_defaults():
    a = features.manifest(TENANTS, objective="lambdarank")
    b = features.manifest(TENANTS, objective="binary")
    b["features"][0]["default"] = 99.0
    assert features.definition_version(a) == features.definition_version(b)
    assert len(features.definition_version(a)) == 16


@pytest.mark.parametrize("change", [
    pytest.param(lambda m: m["features"].pop(), id="a-feature-removed"),
    pytest.param(lambda m: m["features"][0].update(name="renamed"), id="a-feature-renamed"),
    pytest.param(lambda m: m["features"][0].update(kind="categorical"), id="a-kind-changed"),
    pytest.param(lambda m: m["entities"][0].update(windows=[14, 28]), id="a-window-changed"),
    pytest.param(lambda m: m["entities"][1]["counts"].append("hide"), id="a-count-added"),
    pytest.param(lambda m: m.pop("entities"), id="a-manifest-from-before-entities"),
])
def test_the_definition_version_changes_with_what_a_snapshot_must_agree_on(change):
    base = features.manifest(TENANTS, objective="lambdarank")
    changed = copy.deepcopy(base)
    change(changed)
    assert features.definition_version(changed) != features.definition_version(base)


def test_other_tenants_are_other_category_levels_so_another_definition():
    assert (features.definition_version(features.manifest(TENANTS, objective="lambdarank"))
            != features.definition_version(features.manifest(["acme"], objective="lambdarank")))


# ---- manifest --------------------------------------------------------------------------------------

def test_the_manifest_names_the_snapshot_by_its_content_and_describes_every_file():
    files = _files()
    m = _manifest(files)
    assert m == _manifest(files)  # deterministic: a re-run of the same day gets the same id
    assert m["snapshot_id"].startswith("2026-11-06-") and len(m["snapshot_id"]) == len("2026-11-06-") + 12
    assert set(m["files"]) == set(files)
    assert m["files"]["user.parquet"]["rows"] == 3 and m["files"]["items.parquet"]["rows"] == 5
    assert m["files"]["user.parquet"]["bytes"] == len(files["user.parquet"])
    assert m["files"]["user.parquet"]["columns"] == ["user_id", *features.ENTITIES[0].columns()]
    other = {**files, "user.parquet": _files(users=4)["user.parquet"]}
    assert _manifest(other)["snapshot_id"] != m["snapshot_id"]
    assert _manifest(files, version="dv2")["snapshot_id"] != m["snapshot_id"]


def test_sample_requests_use_known_users_and_items_and_every_category():
    reqs = _manifest()["sample_requests"]
    assert len(reqs) == fs.SAMPLE_REQUESTS
    assert {r["user_id"] for r in reqs} == {"user_id-0", "user_id-1", "user_id-2"}
    assert all(len(r["item_ids"]) == 5 and set(r["item_ids"]) == {f"i{i}" for i in range(5)} for r in reqs)
    assert {r["tenant_id"] for r in reqs} == set(TENANTS)


def test_a_snapshot_without_users_cannot_be_warmed_up_and_is_refused():
    with pytest.raises(fs.FeatureSnapshotError, match="no users or no items"):
        _manifest({**_files(), "user.parquet": _files(users=0)["user.parquet"]})


# ---- the pointer never moves backwards ---------------------------------------------------------------

def _pointer(**snapshots) -> dict:
    return {"seq": 7, "snapshots": {v: {"id": sid, "as_of": sid[:10]} for v, sid in snapshots.items()}}


@pytest.mark.parametrize("current, as_of, expected", [
    pytest.param(None, "2026-11-06", "moved", id="first-pointer"),
    pytest.param(_pointer(other="2026-11-09-xx"), "2026-11-06", "moved", id="first-of-its-definitions"),
    pytest.param(_pointer(dv1="2026-11-05-aa"), "2026-11-06", "moved", id="a-newer-day"),
    pytest.param(_pointer(dv1="2026-11-06-aa"), "2026-11-06", "moved", id="the-same-day-rebuilt-with-other-content"),
    pytest.param(_pointer(dv1="2026-11-09-aa"), "2026-11-06", "kept-newer", id="a-backfill-of-an-older-day"),
])
def test_decide_moves_only_forward(current, as_of, expected):
    action, reason = fs.decide(current, _manifest(as_of=as_of))
    assert action == expected
    if expected == "kept-newer":
        assert "never moves it backwards" in reason and "2026-11-09-aa" in reason


def test_a_rerun_of_the_live_snapshot_changes_nothing():
    m = _manifest()
    action, reason = fs.decide({"seq": 3, "snapshots": {"dv1": {"id": m["snapshot_id"], "as_of": m["as_of"]}}}, m)
    assert action == "unchanged" and "already live (seq 3)" in reason


def test_the_next_pointer_replaces_only_its_definitions_entry():
    current = Read({"seq": 4, "snapshots": {"dv1": {"id": "2026-11-05-aa"}, "dv0": {"id": "2026-10-01-zz"}}}, '"e"')
    new = fs.next_pointer(current, definition_version="dv1", entry={"id": "2026-11-06-bb"}, by="t", reason="r")
    assert new["seq"] == 5 and new["previous"] == "2026-11-05-aa" and new["snapshot"] == "2026-11-06-bb"
    assert new["snapshots"] == {"dv1": {"id": "2026-11-06-bb"}, "dv0": {"id": "2026-10-01-zz"}}
    assert current.pointer["snapshots"]["dv1"] == {"id": "2026-11-05-aa"}  # the read pointer is not mutated
    first = fs.next_pointer(None, definition_version="dv1", entry={"id": "x"}, by="t", reason="r")
    assert first["seq"] == 1 and first["previous"] is None
