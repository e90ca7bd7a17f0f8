"""Two model kinds in one models bucket: each has its own versions, live pointer and history."""

from __future__ import annotations

import pytest

from feedloop.core import layout
from feedloop.promotion.registry import Registry, sha256
from tests.unit.registry.test_cas_retry import BUCKET, Store

RETRIEVER_FILES = {"query.onnx": b"query tower", "item.onnx": b"item tower", "index/acme.faiss": b"graph"}
RANKER_FILES = {"model.txt": b"trees", "model.onnx": b"onnx trees"}
PASSED = {"parity": {"passed": True}}


def test_a_retriever_flip_moves_only_the_retrievers_pointer_and_carries_the_query_towers_hash():
    store = Store()
    ranker, retriever = Registry(store, BUCKET), Registry(store, BUCKET, layout.RETRIEVER)
    ranker.register(version="2026-11-05-aa", files=RANKER_FILES, manifest=PASSED)
    ranker.flip(version="2026-11-05-aa", by="dag", reason="gate")
    retriever.register(version="2026-11-05-bb", files=RETRIEVER_FILES, manifest=PASSED)

    flipped = retriever.flip(version="2026-11-05-bb", by="dag", reason="recall")

    assert flipped["sha256"] == sha256(b"query tower")
    assert flipped["uri"] == f"s3://{BUCKET}/retriever/versions/2026-11-05-bb/"
    assert (retriever.live_key, ranker.live_key) == ("retriever/live.json", "ranker/live.json")
    assert ranker.live().version == "2026-11-05-aa" and ranker.live().pointer["seq"] == 1
    assert [p["version"] for p in retriever.history()] == ["2026-11-05-bb"]
    assert (ranker.versions(), retriever.versions()) == (["2026-11-05-aa"], ["2026-11-05-bb"])
    assert "served_file" not in ranker.manifest("2026-11-05-aa")  # a ranker's manifest is as it always was


def test_a_retriever_version_needs_its_query_tower():
    retriever = Registry(Store(), BUCKET, layout.RETRIEVER)
    with pytest.raises(ValueError, match="a retriever version needs query.onnx"):
        retriever.register(version="2026-11-05-bb", files={"item.onnx": b"x"}, manifest=PASSED)


def test_the_ranker_keys_are_unchanged():
    assert layout.version_key("v", "model.onnx") == "ranker/versions/v/model.onnx"
    assert layout.RANKER_LIVE_KEY == "ranker/live.json"
