"""Vocabulary.codes gives the same codes whichever way it searches: hashing the vocabulary (a column as long as it)
or hashing the column and bisecting its distinct values (a training batch shorter than the vocabulary); and a
request's lookup, through the vocabulary's index of Python hashes, gives them too, even when ids share a hash.

The second way compares fixed-width bytes, so ids that a width or a padding could confuse are checked against a
plain dict: a trailing NUL, an id holding the end byte, ids wider than the vocabulary's array, ids over LONG_KEY.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from feedloop.core import vocabulary as vocabulary_module
from feedloop.core.vocabulary import LONG_KEY, UNKNOWN, Vocabulary

LONG = "x" * (LONG_KEY + 40)
ODD = ["a", "a\x00", "a\x01", "ü-😀", "bb", LONG, LONG + "y", "\x00"]
KNOWN = ODD + [f"filler-{i}" for i in range(60)]
QUERIES = ODD + ["filler-7", None, "a\x01\x00", "a\x00\x00", "b", "a" * 50, LONG + "z", "", "\U0010ffff",
                   "bb\x01" + "\x00" * 10]   # "bb" + the end byte + padding, once cut to the array's width


@pytest.mark.parametrize("encode_slice", [vocabulary_module.ENCODE_SLICE, 3], ids=["one-slice", "slices-of-3"])
@pytest.mark.parametrize("copies", [1, 10], ids=["shorter-than-vocabulary", "longer-than-vocabulary"])
def test_codes_equal_a_dict_of_the_vocabulary(copies: int, encode_slice: int, monkeypatch) -> None:
    monkeypatch.setattr(vocabulary_module, "ENCODE_SLICE", encode_slice)  # ids are copied to fixed width by slices
    vocabulary = Vocabulary.of(pa.array(KNOWN))
    oracle = {v: int(c) for v, c in zip(KNOWN, vocabulary.codes(pa.array(KNOWN * 40)))}
    assert sorted(oracle.values()) == list(range(len(KNOWN)))
    queries = [QUERIES[i] for i in np.random.default_rng(3).permutation(len(QUERIES) * copies) % len(QUERIES)]
    column = pa.chunked_array([pa.array(queries[:3], pa.string()), pa.array(queries[3:], pa.string())])
    assert (len(column) < len(vocabulary)) == (copies == 1)
    expected = [oracle.get(q, UNKNOWN) if q is not None else UNKNOWN for q in queries]
    assert vocabulary.codes(column).tolist() == expected
    assert vocabulary.lookup(queries).tolist() == expected


def test_an_empty_vocabulary_knows_nothing() -> None:
    vocabulary = Vocabulary.of(pa.array([], pa.string()))
    assert vocabulary.codes(pa.array(["a", None])).tolist() == [UNKNOWN, UNKNOWN]


@pytest.mark.parametrize("hash_of", [len, lambda text: 0], ids=["some-collide", "all-collide"])
def test_a_lookup_through_colliding_hashes_still_finds_exactly_its_id(monkeypatch, hash_of) -> None:
    """Python's str hash is 64 bits: two ids of a vocabulary may share one. A hash that collides on purpose (the
    length; a constant) must not make a lookup miss an id or find another id."""
    monkeypatch.setattr(vocabulary_module, "_hash", lambda value: hash_of(value) if value is not None else -7)
    vocabulary = Vocabulary.of(pa.array(KNOWN))
    assert vocabulary.build_index().collides
    expected = vocabulary.codes(pa.array(QUERIES, pa.string())).tolist()
    assert vocabulary.lookup(QUERIES).tolist() == expected
    assert sorted(vocabulary.lookup(KNOWN).tolist()) == list(range(len(KNOWN)))
