"""Property tests of everything a pod reads from outside: live.json, features/live.json, manifest.json,
a version's files and its own cache's last_good.json.

The property is the issue's rule: every bad input is a SwapRefused with a reason (never another
exception, which used to escape the watcher's tick), and an accepted pointer only ever names a folder
of the pod's own bucket and prefix, whose files resolve inside the local cache.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedloop.serving.model import (ARTIFACTS, FOLDER_NAME, REASONS, Pointer, Root, SwapRefused, Target, build,
                                    parse_manifest)
from feedloop.serving.published_features import FeaturePointer, SnapshotTarget, load
from feedloop.serving.local_cache import LocalCache
from tests.support import servingdata

VERSIONS = Root("models", "ranker/versions/")
SNAPSHOTS = Root("models", "features/snapshots/")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
# Strings a hostile or broken pointer might carry: path tricks, other buckets, near-miss version ids.
names = st.sampled_from(["2026-11-21-a1b1", "2026-11-21-A1B1", "../../etc", "2026-11-21-a1b1/../x", "..", "",
                         "2026-11-21-a1b1\n", "x" * 300, "2026-11-21-", "s3://other/x"]) | st.text(max_size=20)
uris = st.builds(lambda b, p, n, tail: f"s3://{b}/{p}{n}{tail}", st.sampled_from(["models", "other", ""]),
                 st.sampled_from(["ranker/versions/", "ranker/", "features/snapshots/", ""]), names,
                 st.sampled_from(["/", "", "/..", "//"])) | st.text(max_size=40)


def _accepted_target_is_inside(target: Target | SnapshotTarget, root: Root, name: str) -> None:
    assert target.bucket == root.bucket
    assert FOLDER_NAME.fullmatch(name)
    for file in ("manifest.json", *ARTIFACTS):
        key = target.key(file)
        assert key == root.key(name, file) and ".." not in key.split("/")


@FUZZ
@given(body=json_values)
def test_any_json_as_live_json_is_a_pointer_or_a_refusal(body):
    _pointer_or_refusal(orjson.dumps(body))


@FUZZ
@given(version=names, uri=uris, sha=st.sampled_from(["0" * 64, "A" * 64, "", "0" * 63, None]),
       canary=st.none() | st.fixed_dictionaries({"version": names, "uri": uris, "sha256": st.just("1" * 64),
                                                 "percent": json_values}),
       seq=json_values)
def test_a_pointer_is_only_accepted_for_a_version_folder_of_the_pods_bucket(version, uri, sha, canary, seq):
    body = {"version": version, "uri": uri, "sha256": sha, "seq": seq, **({"canary": canary} if canary else {})}
    pointer = _pointer_or_refusal(orjson.dumps(body))
    if pointer is not None:
        _accepted_target_is_inside(pointer.live, VERSIONS, pointer.live.version)
        if pointer.canary is not None:
            _accepted_target_is_inside(pointer.canary, VERSIONS, pointer.canary.version)


def test_the_registrys_own_pointer_is_accepted():
    version = "2026-11-21-0a1b2c3d4e"
    pointer = Pointer.parse(orjson.dumps({"version": version, "uri": VERSIONS.uri(version), "sha256": "ab" * 32,
                                          "seq": 4}), "etag", VERSIONS)
    assert (pointer.live.version, pointer.live.bucket, pointer.seq) == (version, "models", 4)
    assert pointer.live.key("model.onnx") == f"ranker/versions/{version}/model.onnx"


def _pointer_or_refusal(body: bytes) -> Pointer | None:
    try:
        return Pointer.parse(body, "etag", VERSIONS)
    except SwapRefused as refused:
        assert refused.reason == "bad_pointer" and str(refused)
        return None


@FUZZ
@given(body=json_values, sid=names, uri=uris, as_of=json_values)
def test_any_features_live_json_is_a_pointer_or_a_refusal(body, sid, uri, as_of):
    for candidate in (body, {"snapshots": {"d1": {"id": sid, "uri": uri, "as_of": as_of, "manifest_sha256": "0" * 64}},
                             "seq": 1}):
        try:
            pointer = FeaturePointer.parse(orjson.dumps(candidate), SNAPSHOTS)
        except SwapRefused as refused:
            assert refused.reason == "bad_pointer"
            continue
        for target in pointer.targets.values():
            _accepted_target_is_inside(target, SNAPSHOTS, target.id)


# ---- manifest.json and the files of a version -------------------------------------------------------------

@pytest.fixture(scope="module")
def version():
    v = servingdata.make_version("2026-11-21-a1b1", seed=1, rounds=3)
    artifacts = {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in v.files.items()}
    manifest = {**v.manifest, "version": v.version, "artifacts": artifacts}
    target = Target(v.version, VERSIONS.uri(v.version), artifacts["model.onnx"]["sha256"])
    return target, manifest, v.files


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document (the document itself is ())."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += _paths(v, prefix + (i,))
    return out


def _mutated(doc: Any, data) -> Any:
    """doc with one value somewhere replaced by any JSON value, or one key removed."""
    doc = orjson.loads(orjson.dumps(doc))
    path = data.draw(st.sampled_from(_paths(doc)), label="path")
    if not path:
        return data.draw(json_values, label="document")
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values, label="value")
    return doc


@FUZZ
@given(data=st.data())
def test_a_mutated_manifest_loads_or_is_refused_with_a_reason(version, data):
    """parse_manifest, then build (signature, snapshot, warm-up) on the real files: no other exception escapes."""
    target, manifest, files = version
    body = orjson.dumps(_mutated(manifest, data))
    try:
        parsed = parse_manifest(target, body)
        build(target, parsed, {n: files[n] for n in ARTIFACTS}, onnx_threads=1, sample_max_abs_diff=1e-5,
              source="s3")
    except SwapRefused as refused:
        assert refused.reason in REASONS and str(refused)


def _refusal(version, name: str, changed: bytes) -> str:
    target, manifest, files = version
    with pytest.raises(SwapRefused) as refused:
        build(target, manifest, {**{n: files[n] for n in ARTIFACTS}, name: changed}, onnx_threads=1,
              sample_max_abs_diff=1e-5, source="s3")
    return refused.value.reason


@FUZZ
@given(name=st.sampled_from(ARTIFACTS), cut=st.integers(1, 64))
def test_a_truncated_file_is_refused_as_truncated(version, name, cut):
    body = version[2][name]
    assert _refusal(version, name, body[:len(body) - cut]) == "truncated"


@FUZZ
@given(name=st.sampled_from(ARTIFACTS), flip=st.integers(1, 255))
def test_a_file_with_a_changed_byte_is_refused_as_a_sha256_mismatch(version, name, flip):
    body = version[2][name]
    assert _refusal(version, name, body[:-1] + bytes([body[-1] ^ flip])) == "sha256_mismatch"


@FUZZ
@given(data=st.data())
def test_a_mutated_published_snapshot_manifest_loads_or_is_refused(data):
    files = {k[len("features/"):]: v for k, v in servingdata.snapshot_files(3).items()}
    manifest = {"snapshot_id": "2026-11-25-abc", "as_of": "2026-11-25", "definition_version": "d1",
                "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b),
                          "rows": pq.ParquetFile(io.BytesIO(b)).metadata.num_rows} for n, b in files.items()},
                "sample_requests": [{"tenant_id": "acme", "user_id": "u", "surface": "feed", "device": "ios",
                                     "request_ts": 1.0, "item_ids": ["i"]}]}
    body = orjson.dumps(_mutated(manifest, data))
    target = SnapshotTarget("2026-11-25-abc", SNAPSHOTS.uri("2026-11-25-abc"), "2026-11-25",
                            hashlib.sha256(body).hexdigest(), "d1")
    objects = {target.key("manifest.json"): body, **{target.key(n): b for n, b in files.items()}}
    try:
        load(target, lambda _bucket, key: objects[key])
    except SwapRefused as refused:
        assert refused.reason in REASONS


# ---- the local cache ---------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(body=json_values, version=names)
def test_the_cache_never_reads_outside_itself(tmp_path_factory, body, version):
    root = tmp_path_factory.mktemp("cache")
    (root.parent / "secret").mkdir(exist_ok=True)
    for doc in (body, {"version": version, "uri": VERSIONS.uri(version), "sha256": "0" * 64}):
        (root / "last_good.json").write_bytes(orjson.dumps(doc))
        cache = LocalCache(root, VERSIONS)
        assert cache.load() is None                   # nothing saved: nothing to serve, and no exception
        try:
            path = cache._path(version, "model.onnx")
        except ValueError:
            continue
        assert Path(path).is_relative_to(root.resolve())
