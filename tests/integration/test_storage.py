from __future__ import annotations

import threading
import uuid

import pytest

from feedloop.core.storage import PreconditionFailed

pytestmark = pytest.mark.integration


def test_put_get_and_list(store, embedded):
    bucket = embedded.s3.lake_bucket
    prefix = f"t/{uuid.uuid4().hex}/"
    etag = store.put(bucket, prefix + "a.bin", b"hello")
    found = store.get(bucket, prefix + "a.bin")
    assert found.body == b"hello" and found.etag == etag
    store.put_json(bucket, prefix + "b.json", {"x": 1})
    assert store.get_json(bucket, prefix + "b.json") == {"x": 1}
    assert sorted(store.list_keys(bucket, prefix)) == [prefix + "a.bin", prefix + "b.json"]
    assert store.get(bucket, prefix + "missing") is None


def test_if_none_match_makes_an_object_immutable(store, embedded):
    key = f"t/{uuid.uuid4().hex}/immutable"
    store.put(embedded.s3.models_bucket, key, b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="If-None-Match"):
        store.put(embedded.s3.models_bucket, key, b"v2", if_none_match=True)
    assert store.get(embedded.s3.models_bucket, key).body == b"v1"


def test_compare_and_swap_loses_a_race_with_412(store, embedded):
    bucket, key = embedded.s3.models_bucket, f"t/{uuid.uuid4().hex}/pointer"
    etag = store.put(bucket, key, b"v0")
    store.put(bucket, key, b"winner", if_match=etag)
    with pytest.raises(PreconditionFailed, match="If-Match"):
        store.put(bucket, key, b"loser", if_match=etag)
    assert store.get(bucket, key).body == b"winner"


def test_concurrent_swaps_from_the_same_etag_exactly_one_wins(store, embedded):
    bucket, key = embedded.s3.models_bucket, f"t/{uuid.uuid4().hex}/pointer"
    etag = store.put(bucket, key, b"v0")
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def swap(i: int) -> None:
        barrier.wait()
        try:
            store.put(bucket, key, f"writer-{i}".encode(), if_match=etag)
            outcomes.append(f"won-{i}")
        except PreconditionFailed:
            outcomes.append("lost")

    threads = [threading.Thread(target=swap, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 3
    assert store.get(bucket, key).body == f"writer-{winners[0].split('-')[1]}".encode()
