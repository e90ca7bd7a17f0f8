"""The retriever's recall gate and its register-then-flip, on the in-memory store."""

from __future__ import annotations

import pytest

from feedloop.core import layout
from feedloop.core.config import RetrievalSettings
from feedloop.promotion.registry import Registry
from feedloop.promotion.retriever import decide, register_and_flip
from feedloop.retrieval.counterfactual import Estimate, WeightedRecall
from feedloop.retrieval.evaluate import Recall
from feedloop.training.counterfactual import Bootstrap
from tests.unit.registry.test_cas_retry import BUCKET, Store

CFG = RetrievalSettings(gate_k=100, gate_min_vs_popularity=1.5, gate_tolerance=0.01, gate_min_users=10,
                        gate_on="engaged")
EXPOSURE = CFG.model_copy(update={"gate_on": "exposure", "gate_min_vs_popularity": 1.0})
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


def weighted(candidate: float, popularity: float, live: float | None, vs_live: tuple[float, float],
             vs_popularity: tuple[float, float] = (-1, 1)) -> WeightedRecall:
    at = {"candidate": candidate, "popularity": popularity} | ({} if live is None else {"live": live})
    diffs = {"candidate-popularity": Estimate(candidate - popularity, *vs_popularity)}
    if live is not None:
        diffs["candidate-live"] = Estimate(candidate - live, *vs_live)
    return WeightedRecall({n: {100: Estimate(v, v, v)} for n, v in at.items()},
                          {n: {100: e} for n, e in diffs.items()}, 20, 10.0, Bootstrap())


@pytest.mark.parametrize(("scores", "failed"), [
    pytest.param(weighted(0.12, 0.10, None, (0, 0)), [], id="first-retriever-above-popularity"),
    pytest.param(weighted(0.093, 0.10, None, (0, 0), (-0.016, 0.002)), [],
                 id="below-popularity-but-the-interval-reaches-zero"),
    pytest.param(weighted(0.08, 0.10, None, (0, 0), (-0.03, -0.011)),
                 ["below popularity by more than 0.01 (interval [-0.0300, -0.0110])"], id="clearly-below-popularity"),
    pytest.param(weighted(0.12, 0.10, 0.15, (-0.06, 0.002)), [], id="worse-point-but-the-interval-reaches-zero"),
    pytest.param(weighted(0.12, 0.10, 0.15, (-0.05, -0.02)), ["below the live retriever by more than 0.01"],
                 id="clearly-worse-than-live"),
])
def test_the_exposure_gate_compares_weighted_recall_and_holds_only_a_clearly_worse_candidate(scores, failed):
    # plain recall says popularity wins by far: the exposure gate does not look at it
    decision = decide(recall(0.05), recall(0.5), recall(0.5) if "live" in scores.at else None, EXPOSURE,
                      weighted=scores)
    assert list(decision.failed) == failed and decision.estimate == "exposure"
    assert decision.candidate == scores.at["candidate"][100].value


def test_a_narrow_interval_narrows_the_tolerance_so_a_clearly_worse_retriever_is_held():
    # 0.009 below the live one with an interval of +-0.003: inside gate_tolerance 0.01, yet clearly worse
    scores = weighted(0.141, 0.10, 0.15, (-0.012, -0.006))
    decision = decide(recall(0.05), recall(0.5), recall(0.5), EXPOSURE, weighted=scores)
    assert list(decision.failed) == ["below the live retriever by more than 0.0045 (1.5 half-widths of the interval; "
                                     "retrieval.gate_tolerance 0.01 caps it)"]
    fixed = EXPOSURE.model_copy(update={"gate_tolerance_widths": 0.0})
    assert decide(recall(0.05), recall(0.5), recall(0.5), fixed, weighted=scores).promote


def test_a_decision_reads_back_from_the_manifest_as_it_was():
    decision = decide(recall(0.05), recall(0.5), recall(0.5), EXPOSURE, weighted=weighted(0.12, 0.1, 0.15, (-1, 0)))
    again = type(decision).from_dict(decision.to_dict())
    assert again == decision and again.reason.startswith("exposure-weighted recall@100 0.1200")


def test_the_exposure_gate_without_weighted_recall_is_an_error():
    with pytest.raises(ValueError, match="gate_on=exposure"):
        decide(recall(0.2), recall(0.1), None, EXPOSURE)


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
