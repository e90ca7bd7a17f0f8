"""Publishing feature snapshots on the real embedded S3: immutable folders, features/live.json by
compare-and-swap with its history, idempotent re-runs, backfills that never move it backwards, dry runs."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from feedloop.features import snapshots as fs
from feedloop.features import definitions as features
from feedloop.core import layout as lake
from feedloop.core.storage import PreconditionFailed
from tests.support import servingdata

pytestmark = pytest.mark.integration
DAY = date(2026, 11, 5)


@pytest.fixture
def world(embedded, store):
    """Own lake and models buckets; `dataset(day, seed)` writes what build_dataset leaves for that day."""
    suffix = uuid.uuid4().hex[:8]
    lake_bucket, models_bucket = f"lake-{suffix}", f"models-{suffix}"
    store.ensure_bucket(lake_bucket)
    store.ensure_bucket(models_bucket)
    settings = embedded.model_copy(update={"s3": embedded.s3.model_copy(
        update={"lake_bucket": lake_bucket, "models_bucket": models_bucket}),
        "events": embedded.events.model_copy(update={"tenants": [servingdata.TENANT, "globex"]})})

    def dataset(day: date, seed: int) -> dict[str, bytes]:
        prefix = lake.dataset_prefix(day)
        files = {k[len("features/"):]: v for k, v in servingdata.snapshot_files(seed).items()}
        for name, body in files.items():
            store.put(lake_bucket, f"{prefix}snapshot/{name}", body)
        store.put_json(lake_bucket, prefix + "lineage.json", {
            "window_end": (day + timedelta(days=1)).isoformat(), "content_hash": f"hash-{seed}",
            "features": features.manifest([servingdata.TENANT, "globex"], objective="lambdarank")})
        return files

    def publish(day: date, **kw) -> fs.Published:
        return fs.publish(settings, day=day, by="tests", store=store, **kw)

    return settings, store, models_bucket, dataset, publish


def _keys(store, bucket) -> list[str]:
    return sorted(store.list_keys(bucket, "features/"))


def test_a_published_snapshot_is_an_immutable_folder_with_a_manifest_and_the_pointer_names_it(world):
    settings, store, bucket, dataset, publish = world
    files = dataset(DAY, seed=1)
    done = publish(DAY)
    assert (done.written, done.pointer, done.seq, done.as_of) == (True, "moved", 1, "2026-11-06")
    assert done.snapshot_id.startswith("2026-11-06-") and done.uri == f"s3://{bucket}/features/snapshots/{done.snapshot_id}/"
    manifest = store.get_json(bucket, fs.snapshot_key(done.snapshot_id, "manifest.json"))
    assert manifest["definition_version"] == features.definition_version(
        features.manifest([servingdata.TENANT, "globex"], objective="binary"))
    assert manifest["dataset_uri"] == f"s3://{settings.s3.lake_bucket}/datasets/ranker/2026-11-05/"
    for name, body in files.items():
        stored = store.get(bucket, fs.snapshot_key(done.snapshot_id, name)).body
        assert stored == body
        assert manifest["files"][name] == {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                                           "rows": pq.read_table(io.BytesIO(body)).num_rows,
                                           "columns": pq.read_table(io.BytesIO(body)).column_names}
    live = fs.pointer(store, bucket).read().pointer
    entry = live["snapshots"][manifest["definition_version"]]
    assert entry["id"] == live["snapshot"] == done.snapshot_id and entry["as_of"] == "2026-11-06"
    assert entry["manifest_sha256"] == hashlib.sha256(
        store.get(bucket, fs.snapshot_key(done.snapshot_id, "manifest.json")).body).hexdigest()
    assert (live["seq"], live["previous"], live["action"], live["published_by"]) == (1, None, "publish", "tests")
    assert fs.pointer(store, bucket).history() == [live]


def test_a_rerun_of_the_same_day_publishes_nothing_new(world):
    _, store, bucket, dataset, publish = world
    dataset(DAY, seed=1)
    first = publish(DAY)
    before, etag = _keys(store, bucket), fs.pointer(store, bucket).read().etag
    again = publish(DAY)
    assert (again.snapshot_id, again.written, again.pointer, again.seq) == (first.snapshot_id, False, "unchanged", 1)
    assert _keys(store, bucket) == before and fs.pointer(store, bucket).read().etag == etag


def test_each_newer_day_moves_the_pointer_and_a_backfill_of_an_older_day_never_moves_it_back(world):
    _, store, bucket, dataset, publish = world
    for d, seed in ((0, 1), (1, 2)):
        dataset(DAY + timedelta(days=d), seed=seed)
    first, second = publish(DAY), publish(DAY + timedelta(days=1))
    assert second.pointer == "moved" and second.seq == 2
    dataset(DAY - timedelta(days=3), seed=3)
    backfill = publish(DAY - timedelta(days=3))
    assert (backfill.pointer, backfill.written, backfill.seq) == ("kept-newer", True, 2)
    assert "never moves it backwards" in backfill.reason and second.snapshot_id in backfill.reason
    assert store.get(bucket, fs.snapshot_key(backfill.snapshot_id, "manifest.json")) is not None  # kept, addressable
    live = fs.pointer(store, bucket).read().pointer
    assert live["snapshot"] == second.snapshot_id and live["previous"] == first.snapshot_id
    assert [p["snapshot"] for p in fs.pointer(store, bucket).history()] == [first.snapshot_id, second.snapshot_id]


def test_a_dry_run_writes_nothing_and_says_what_it_would_do(world):
    _, store, bucket, dataset, publish = world
    dataset(DAY, seed=1)
    dry = publish(DAY, dry_run=True)
    assert dry.pointer == "dry-run" and "would be moved" in dry.reason and _keys(store, bucket) == []
    real = publish(DAY)
    assert real.snapshot_id == dry.snapshot_id


def test_a_lost_compare_and_swap_changes_nothing_and_a_publish_reads_the_pointer_again(world):
    _, store, bucket, dataset, publish = world
    dataset(DAY, seed=1)
    dataset(DAY + timedelta(days=1), seed=2)
    publish(DAY)
    cas = fs.pointer(store, bucket)
    stale = cas.read()
    won = publish(DAY + timedelta(days=1))  # another writer wins between the read and the write
    with pytest.raises(PreconditionFailed):
        cas.replace(stale, {**stale.pointer, "seq": stale.pointer["seq"] + 1, "snapshot": "mine"})
    assert cas.read().pointer["snapshot"] == won.snapshot_id and len(cas.history()) == 2


def test_publishing_before_build_dataset_ran_names_what_to_run(world):
    *_, publish = world
    with pytest.raises(fs.FeatureSnapshotError, match="run build_dataset for 2026-11-05 first"):
        publish(DAY)


def test_a_folder_someone_wrote_into_is_refused(world):
    _, store, bucket, dataset, publish = world
    dataset(DAY, seed=1)
    sid = publish(DAY, dry_run=True).snapshot_id
    store.put(bucket, fs.snapshot_key(sid, "user.parquet"), b"other bytes")
    with pytest.raises(fs.FeatureSnapshotError, match="exists with other bytes"):
        publish(DAY)
    assert fs.pointer(store, bucket).read() is None
