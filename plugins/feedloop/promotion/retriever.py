"""The two-tower retriever from candidate to live: a recall gate, then register and flip in its own registry kind.

Why its own gate: a retriever is judged by whether the items a user goes on to take are among the few hundred it
returns (recall@k on the holdout day), not by how it orders them; the ranker's debiased NDCG does not apply.
Why against popularity as well as the live retriever: the tenant's most engaged items are what retrieval
without a model returns, so a model below them is not worth serving even with no champion to beat. Why
exposure-weighted by default: plain recall of the engaged items rewards predicting what the logging policy
showed (feedloop.retrieval.counterfactual; README, "Retrieval"). Why the numbers are all kept: as with the
ranker's gate, an operator must see every number behind a decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from feedloop.core import layout
from feedloop.core.config import RetrievalSettings
from feedloop.promotion.gate import narrowed
from feedloop.promotion.registry import Registry
from feedloop.retrieval.counterfactual import Estimate, WeightedRecall
from feedloop.retrieval.evaluate import Recall


@dataclass(frozen=True)
class RetrieverDecision:
    promote: bool
    k: int
    estimate: str  # "exposure" (exposure-weighted recall) or "engaged" (plain recall of the engaged items)
    candidate: float
    popularity: float
    champion: float | None
    users: int
    failed: tuple[str, ...]  # why it was held, one line per failed check (empty: promoted)
    vs_popularity: Estimate | None = None  # paired bootstrap interval of candidate - popularity (exposure only)
    vs_champion: Estimate | None = None    # and of candidate - live retriever

    @property
    def reason(self) -> str:
        vs = "" if self.champion is None else f", live {self.champion:.4f}"
        if self.vs_champion is not None:
            vs += f", difference [{self.vs_champion.low:+.4f}, {self.vs_champion.high:+.4f}]"
        what = "exposure-weighted recall" if self.estimate == "exposure" else "recall"
        head = f"{what}@{self.k} {self.candidate:.4f} (popularity {self.popularity:.4f}{vs}; {self.users} users)"
        return head if self.promote else f"{head}: held, {'; '.join(self.failed)}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed), "reason": self.reason}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RetrieverDecision:
        """The decision a registered version's manifest recorded (a re-run of its day reads it back)."""
        fields = {"estimate": "engaged", **{k: v for k, v in doc.items() if k != "reason"}}  # older: plain recall
        for name in ("vs_popularity", "vs_champion"):
            fields[name] = None if fields.get(name) is None else Estimate(**fields[name])
        return cls(**{**fields, "failed": tuple(fields["failed"])})


def decide(candidate: Recall, popularity: Recall, champion: Recall | None, cfg: RetrievalSettings, *,
           weighted: WeightedRecall | None = None) -> RetrieverDecision:
    """Promote iff enough users were judged and recall@gate_k is not below popularity's nor (with a live retriever)
    the live one's by more than gate_tolerance. With retrieval.gate_on: exposure, on the exposure-weighted recall,
    where "below" means the paired bootstrap interval of the difference lies entirely under -gate_tolerance (the
    ranker's rule: held only when clearly worse; the bench's ties are too close to call on point values), the
    tolerance at most gate_tolerance_widths half-widths of that interval (gate.narrowed). With
    engaged, on plain recall by point values, popularity's scaled by gate_min_vs_popularity.
    weighted: the exposure-weighted recall of "candidate", "popularity" and "live" with the differences
    "candidate-popularity" and "candidate-live"; needed with gate_on: exposure."""
    k = cfg.gate_k
    if k not in candidate.at:
        raise ValueError(f"retrieval.gate_k={k} is not among the evaluated recall_at {sorted(candidate.at)}")
    if cfg.gate_on == "exposure":
        if weighted is None:
            raise ValueError("retrieval.gate_on=exposure needs the exposure-weighted recall")
        at = {name: by_k[k].value for name, by_k in weighted.at.items()}
        vs_popularity = weighted.differences["candidate-popularity"][k]
        vs_live = weighted.differences["candidate-live"][k] if champion is not None else None
    else:
        at = {"candidate": candidate.at[k], "popularity": popularity.at[k]}
        at.update({} if champion is None else {"live": champion.at[k]})
        vs_popularity = vs_live = None
    ours, popular, live = at["candidate"], at["popularity"], at.get("live")
    failed = []
    if candidate.users < cfg.gate_min_users:
        failed.append(f"{candidate.users} users with engagement < gate_min_users {cfg.gate_min_users}")
    if vs_popularity is not None and vs_popularity.high < -(tol := _tolerance(vs_popularity, cfg)):
        failed.append(f"below popularity by more than {_said(tol, cfg)} (interval [{vs_popularity.low:+.4f}, "
                      f"{vs_popularity.high:+.4f}])")
    elif vs_popularity is None and ours < cfg.gate_min_vs_popularity * popular:
        failed.append(f"below {cfg.gate_min_vs_popularity} x popularity ({cfg.gate_min_vs_popularity * popular:.4f})")
    if vs_live is not None and vs_live.high < -(tol := _tolerance(vs_live, cfg)):
        failed.append(f"below the live retriever by more than {_said(tol, cfg)}")
    elif vs_live is None and live is not None and ours < live - cfg.gate_tolerance:
        failed.append(f"below the live retriever by more than {cfg.gate_tolerance}")
    return RetrieverDecision(not failed, k, cfg.gate_on, ours, popular, live, candidate.users, tuple(failed),
                             vs_popularity, vs_live)


def _tolerance(diff: Estimate, cfg: RetrievalSettings) -> float:
    """gate_tolerance, or less where the interval is narrow: the ranker's cap (gate.narrowed), for the same reason."""
    return narrowed(cfg.gate_tolerance, cfg.gate_tolerance_widths, diff.low, diff.high)


def _said(tol: float, cfg: RetrievalSettings) -> str:
    """The tolerance a held reason names: gate_tolerance, or the capped one and why."""
    if tol >= cfg.gate_tolerance:
        return f"{cfg.gate_tolerance:g}"
    return (f"{tol:.4f} ({cfg.gate_tolerance_widths:g} half-widths of the interval; "
            f"retrieval.gate_tolerance {cfg.gate_tolerance:g} caps it)")


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
