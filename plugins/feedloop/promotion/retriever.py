"""The two-tower retriever from candidate to live: a recall gate, then register and flip in its own registry kind.

Why its own gate: a retriever is judged by whether the items a user goes on to take are among the few hundred it
returns (recall@k on the holdout day), not by how it orders them; the ranker's debiased NDCG does not apply.
Why against popularity as well as the live retriever: the tenant's most engaged items are what retrieval
without a model returns, so a model below them is not worth serving even with no champion to beat. Why the
numbers are all kept: as with the ranker's gate, an operator must see every number behind a decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from feedloop.core import layout
from feedloop.core.config import RetrievalSettings
from feedloop.promotion.registry import Registry
from feedloop.retrieval.evaluate import Recall


@dataclass(frozen=True)
class RetrieverDecision:
    promote: bool
    k: int
    candidate: float
    popularity: float
    champion: float | None
    users: int
    failed: tuple[str, ...]  # why it was held, one line per failed check (empty: promoted)

    @property
    def reason(self) -> str:
        vs = "" if self.champion is None else f", live {self.champion:.4f}"
        head = f"recall@{self.k} {self.candidate:.4f} (popularity {self.popularity:.4f}{vs}; {self.users} users)"
        return head if self.promote else f"{head}: held, {'; '.join(self.failed)}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed), "reason": self.reason}


def decide(candidate: Recall, popularity: Recall, champion: Recall | None, cfg: RetrievalSettings
           ) -> RetrieverDecision:
    """Promote iff enough users were judged, recall@gate_k reaches gate_min_vs_popularity x popularity's, and
    (with a live retriever) it is no more than gate_tolerance below the live one's on the same day."""
    k = cfg.gate_k
    if k not in candidate.at:
        raise ValueError(f"retrieval.gate_k={k} is not among the evaluated recall_at {sorted(candidate.at)}")
    ours, popular = candidate.at[k], popularity.at[k]
    live = None if champion is None else champion.at[k]
    failed = []
    if candidate.users < cfg.gate_min_users:
        failed.append(f"{candidate.users} users with engagement < gate_min_users {cfg.gate_min_users}")
    if ours < cfg.gate_min_vs_popularity * popular:
        failed.append(f"below {cfg.gate_min_vs_popularity} x popularity ({cfg.gate_min_vs_popularity * popular:.4f})")
    if live is not None and ours < live - cfg.gate_tolerance:
        failed.append(f"below the live retriever by more than {cfg.gate_tolerance}")
    return RetrieverDecision(not failed, k, ours, popular, live, candidate.users, tuple(failed))


def register_and_flip(registry: Registry, *, version: str, files: Mapping[str, bytes], manifest: Mapping[str, Any],
                      decision: RetrieverDecision, by: str, logical_date: str | None = None,
                      expect_live: str | None | bool = True) -> dict[str, Any] | None:
    """Register the version (always: a held candidate stays inspectable), then flip retriever/live.json to it if
    the gate passed; the new pointer, or None when held. expect_live: the live retriever it was judged against."""
    if registry.kind != layout.RETRIEVER:
        raise ValueError(f"a retriever is registered in the retriever registry, not the {registry.kind.name} one")
    registry.register(version=version, files=files, manifest={**manifest, "gate": decision.to_dict()})
    if not decision.promote:
        return None
    return registry.flip(version=version, by=by, reason=decision.reason, logical_date=logical_date,
                         expect_live=expect_live)
