"""The retriever's recall gate and its register-then-flip, on the in-memory store."""

from __future__ import annotations

import pytest

from feedloop.core import layout
from feedloop.core.config import RetrievalSettings
from feedloop.promotion.registry import Registry
from feedloop.promotion.retriever import decide, register_and_flip
from feedloop.retrieval.evaluate import Recall
from tests.unit.registry.test_cas_retry import BUCKET, Store

CFG = RetrievalSettings(gate_k=100, gate_min_vs_popularity=1.5, gate_tolerance=0.01, gate_min_users=10)
FILES = {"query.onnx": b"q", "item.onnx": b"i", "index/items.json": b"{}"}


def recall(value: float, users: int = 20) -> Recall:
    return Recall("m", {100: value, 500: 0.9}, users)


@pytest.mark.parametrize(("candidate", "champion", "failed"), [
    pytest.param(recall(0.16), None, [], id="first-retriever-above-1.5x-popularity"),
    pytest.param(recall(0.14), None, ["below 1.5 x popularity (0.1500)"], id="under-1.5x-popularity"),
    pytest.param(recall(0.16), recall(0.165), [], id="within-the-tolerance-of-the-live-one"),
    pytest.param(recall(0.16), recall(0.18), ["below the live retriever by more than 0.01"], id="worse-than-live"),
    pytest.param(recall(0.16, users=9), None, ["9 users with engagement < gate_min_users 10"], id="too-few-users"),
])
def test_the_gate_names_every_failed_check(candidate, champion, failed):
    decision = decide(candidate, recall(0.10), champion, CFG)
    assert list(decision.failed) == failed and decision.promote == (not failed)


def test_a_gate_on_an_unevaluated_k_is_an_error():
    with pytest.raises(ValueError, match="gate_k=50"):
        decide(recall(0.2), recall(0.1), None, CFG.model_copy(update={"gate_k": 50}))


def test_a_passed_candidate_is_registered_and_made_live_a_held_one_only_registered():
    registry = Registry(Store(), BUCKET, layout.RETRIEVER)
    passed = decide(recall(0.2), recall(0.1), None, CFG)
    pointer = register_and_flip(registry, version="2026-11-05-aa", files=FILES, manifest={"parity": {"passed": True}},
                                decision=passed, by="dag", logical_date="2026-11-05")
    held = decide(recall(0.12), recall(0.1), recall(0.2), CFG)
    assert register_and_flip(registry, version="2026-11-06-bb", files=FILES, manifest={"parity": {"passed": True}},
                             decision=held, by="dag") is None

    assert registry.live().pointer == pointer and pointer["reason"].startswith("recall@100 0.2000")
    assert registry.versions() == ["2026-11-05-aa", "2026-11-06-bb"]
    assert registry.manifest("2026-11-06-bb")["gate"]["promote"] is False


def test_a_retriever_is_never_registered_in_the_rankers_registry():
    with pytest.raises(ValueError, match="not the ranker one"):
        register_and_flip(Registry(Store(), BUCKET), version="v", files=FILES, manifest={},
                          decision=decide(recall(0.2), recall(0.1), None, CFG), by="dag")
