"""A pod's snapshot finds exactly the rows a plain dict of its keys would, for ids nobody planned for.

The snapshot keeps its keys as sorted bytes (feedloop.core.vocabulary) so that loading one does not hold
the GIL for long; this checks it against the obvious dict-of-keys reading of the same files: unicode,
ids differing only by a trailing NUL, ids longer than the fixed-width array takes, unknown ids and
authors, an item listed twice in the catalog, an item without a topic.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.core.vocabulary import LONG_KEY, Vocabulary
from feedloop.features import content_profile
from feedloop.features import definitions as features
from feedloop.serving.snapshot import Snapshot

LONG = "x" * (LONG_KEY + 40)
USERS = ["u1", "u1\x00", "ü-😀", "u2", LONG, "u" * 30, "\x00u"]
ITEMS = ["i1", "i1\x00", "ï2", "i3", LONG + "i", "i4", "\U0010ffff"]
AUTHORS = ["a1", "a1\x00", "å", LONG + "a", "a2"]
TOPICS = ["t1", "t1\x00", "tø"]
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _parquet(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _entity_rows(rng: np.random.Generator, entity: features.Entity) -> dict[tuple, np.ndarray]:
    pools = {"user_id": USERS, "item_id": ITEMS, "author_id": AUTHORS, "topic": TOPICS}
    keys = {tuple(rng.choice(pools[k]) for k in entity.keys) for _ in range(25)}
    return {k: rng.integers(0, 50, len(entity.columns())).astype(np.float64) for k in sorted(keys)}


def _files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict, dict]:
    files, expected = {}, {}
    for entity in features.ENTITIES:
        rows = _entity_rows(rng, entity)
        expected[entity.name] = rows
        columns = {k: [key[j] for key in rows] for j, k in enumerate(entity.keys)}
        columns.update({c: [v[j] for v in rows.values()] for j, c in enumerate(entity.columns())})
        files[f"{entity.name}.parquet"] = _parquet(columns)
    catalog = [("i1", "t1", 1.0, "a1"), ("i1\x00", "t1\x00", 2.0, None), ("ï2", None, 3.0, "å"),
               ("i3", "tø", 4.0, LONG + "a"), (LONG + "i", "t1", 5.0, "a2"), ("i3", "t1", 6.0, "a2")]  # i3 twice
    files["items.parquet"] = _parquet({
        "item_id": [c[0] for c in catalog], "topic": [c[1] for c in catalog],
        "created_at": pa.array([T0.replace(hour=int(c[2])) for c in catalog], pa.timestamp("us", tz="UTC")),
        "author_id": [c[3] for c in catalog]})
    meta = {c[0]: (c[1], T0.replace(hour=int(c[2])).timestamp(), c[3]) for c in catalog}   # the last row wins
    return files, expected, meta


@pytest.mark.parametrize("seed", range(6))
def test_every_lookup_equals_a_dict_of_the_same_keys(seed):
    rng = np.random.default_rng(seed)
    files, expected, meta = _files(rng)
    snapshot = Snapshot.from_parquet(files)
    for user in [*USERS, "nobody", "u1\x00\x00", LONG + "?"]:
        items = [*ITEMS, "unknown", LONG + "?", "i1\x00\x00"]
        given = [None, "a2", None, "nobody", None, "a1\x00", None, None, None, "å"]
        authors = snapshot.authors(items, given)
        assert authors == [g if g is not None else meta.get(i, (None, None, None))[2] for i, g in zip(items, given)]
        got = snapshot.inputs(tenant_id="t", user_id=user, surface="feed", device="ios", request_ts=1.0,
                              item_ids=items, author_ids=authors)
        topics = [meta.get(i, (None,))[0] for i in items]
        keys = {"user": [(user,)] * len(items), "item": [(i,) for i in items], "author": [(a,) for a in authors],
                "user_author": [(user, a) for a in authors], "user_topic": [(user, t) for t in topics]}
        for entity in features.ENTITIES:
            zero = np.zeros(len(entity.columns()))
            want = np.array([expected[entity.name].get(k, zero) for k in keys[entity.name]])
            have = np.column_stack([got[c] for c in entity.columns()])
            np.testing.assert_array_equal(have, want, err_msg=f"{entity.name} for user {user!r}")
        created = [meta[i][1] if i in meta else np.nan for i in items]
        np.testing.assert_array_equal(got["item_created_at"], np.array(created))
        for named in (given, [None] * len(items)):      # the pod's one-pass path: the same authors and inputs
            pod_authors, pod_inputs = snapshot.request(tenant_id="t", user_id=user, surface="feed", device="ios",
                                                       request_ts=1.0, item_ids=items, author_ids=named)
            resolved = snapshot.authors(items, named)
            assert pod_authors == resolved
            want_inputs = snapshot.inputs(tenant_id="t", user_id=user, surface="feed", device="ios", request_ts=1.0,
                                          item_ids=items, author_ids=resolved)
            assert pod_inputs.keys() == want_inputs.keys()
            for name, column in want_inputs.items():
                np.testing.assert_array_equal(pod_inputs[name], column, err_msg=f"{name} for user {user!r}")
    assert snapshot.sizes()["items"] == len(meta)
    assert {e.name: snapshot.sizes()[e.name] for e in features.ENTITIES} == {k: len(v) for k, v in expected.items()}


def test_a_vocabulary_codes_columns_and_requests_alike():
    vocab = Vocabulary.of(pa.array(USERS), pa.chunked_array([pa.array(["u2", None, "new"])]))
    assert len(vocab) == len(USERS) + 1
    column = vocab.codes(pa.array([*USERS, "new", None, "absent"]))
    request = vocab.lookup([*USERS, "new", None, "absent"])
    np.testing.assert_array_equal(column, request)
    assert sorted(column[:-2].tolist()) == list(range(len(USERS) + 1))
    assert column[-2] == column[-1] == -1
    assert vocab.lookup(["\ud800"])[0] == -1          # a lone surrogate from JSON: unknown, not an error


def test_recent_positives_are_the_embedded_items_of_each_profile_in_order():
    items = pa.table({"item_id": ["i1", "i2", "i3", "i4"],
                      "embedding": pa.array([[1.0, 0.0], None, [0.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32()))})
    users = pa.table({"user_id": ["u1", "u2", "u3", "u4"],
                      "content_profile": pa.array([[1.0, 0.0], None, [0.0, 1.0], [1.0, 1.0]], pa.list_(pa.float32())),
                      "recent_positives": pa.array([["i4", "i2", "gone", "i1"], ["i1"], None, ["i3", None]],
                                                   pa.list_(pa.string()))})
    user_ids, item_ids, table = content_profile.from_snapshot(users, items)
    assert user_ids.to_pylist() == ["u1", "u3", "u4"] and item_ids.to_pylist() == ["i1", "i3", "i4"]
    nan_row = len(table.embeddings) - 1
    assert table.recent.shape[1] == max(features.CONTENT.recent_k, 4)
    assert table.recent[0, :2].tolist() == [2, 0] and set(table.recent[0, 2:].tolist()) == {nan_row}
    assert set(table.recent[1].tolist()) == {nan_row}
    assert table.recent[2, 0] == 1 and set(table.recent[2, 1:].tolist()) == {nan_row}
