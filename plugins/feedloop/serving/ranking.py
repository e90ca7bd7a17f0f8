"""One request's list: score candidates with the live ranker, order them (or explore), and the list to log.

Why /rank and /recommend share this: a /recommend list is a /rank list whose candidates the pod retrieved, so
the features, the exploration share and the impression record must be exactly the same; only the retriever's
version is added.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from feedloop.features import definitions as features
from feedloop.serving.impressions import ServedList
from feedloop.serving.rank_request import RankRequest
from feedloop.serving.recommend_request import RecommendRequest
from feedloop.serving.retriever import LoadedRetriever


@dataclass(frozen=True)
class Ranked:
    body: dict[str, Any]
    served: ServedList
    candidates: int                   # how many were scored


def rank(model, req: RankRequest, exploration_share: float, *, now_ms: int, simulated_time: bool,
         retriever_version: str | None = None) -> Ranked:
    """Score and order; the impressions' Kafka record gets the pod's clock, or `ts` in a simulation (so a
    simulated day's impressions arrive on that day, as its outcomes do)."""
    ts_ms = req.ts_ms if req.ts_ms is not None else now_ms
    request_id = req.request_id or uuid.uuid4().hex
    authors, inputs = model.snapshot.request(tenant_id=req.tenant_id, user_id=req.user_id, surface=req.surface,
                                             device=req.device, request_ts=ts_ms / 1000.0, item_ids=req.item_ids,
                                             author_ids=req.author_ids)
    scores = model.score(features.derive(inputs, model.categories, model.feature_names))
    explore = _explores(request_id, exploration_share)
    order = shown_order(scores, req.limit, explore=explore, request_id=request_id).tolist()
    item_ids, author_ids = [req.item_ids[i] for i in order], [authors[i] for i in order]
    items = [{"item_id": item, "author_id": author, "score": score, "position": p}
             for p, (item, author, score) in enumerate(zip(item_ids, author_ids, scores[order].tolist()), start=1)]
    served = ServedList(request_id=request_id, tenant_id=req.tenant_id, user_id=req.user_id, surface=req.surface,
                        device=req.device, query=req.query, ts_ms=ts_ms, logged_ms=ts_ms if simulated_time else now_ms,
                        model_version=model.version, explore=explore,
                        item_ids=item_ids, author_ids=author_ids,
                        retriever_version=retriever_version)
    body = {"request_id": request_id, "model_version": model.version, "explore": explore, "items": items}
    if retriever_version is not None:
        body["retriever_version"] = retriever_version
    return Ranked(body, served, len(req.item_ids))


def recommend(model, retriever: LoadedRetriever, req: RecommendRequest, k: int, exploration_share: float, *,
              now_ms: int, simulated_time: bool) -> Ranked | None:
    """Retrieve the tenant's top k items for the user and rank them as /rank would (authors from the ranker's
    catalog); None when the tenant has no items in the retriever's index."""
    item_ids = retriever.candidates(req.tenant_id, req.user_id, k)
    if not item_ids:
        return None
    ranked = RankRequest(tenant_id=req.tenant_id, user_id=req.user_id, surface=req.surface, device=req.device,
                         query=req.query, request_id=req.request_id, ts_ms=req.ts_ms, limit=req.limit,
                         item_ids=item_ids, author_ids=[None] * len(item_ids))
    return rank(model, ranked, exploration_share, now_ms=now_ms, simulated_time=simulated_time,
                retriever_version=retriever.version)


def shown_order(scores: np.ndarray, limit: int | None, *, explore: bool, request_id: str) -> np.ndarray:
    """The candidates' indices in the order shown: the top `limit` by score, or on an exploration request a
    random `limit` of ALL candidates in random order (seeded by request_id: a retry gets the same list)."""
    if explore:
        return np.random.default_rng(_seed(request_id)).permutation(len(scores))[:limit]
    return np.argsort(-scores, kind="stable")[:limit]


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _explores(request_id: str, share: float) -> bool:
    """A stable share of requests (by request_id, so a retried request gets the same answer) is exploration:
    a uniformly random subset of the candidates, shown in random order. Neither which items are shown nor
    where depends on any model, so on these lists any two models can be compared without the live one's
    selection bias (shuffling only its own top items would still judge challengers on its choice), and
    their clicks by position measure the examination curve."""
    return share > 0 and (_seed("explore:" + request_id) % 1_000_000) < share * 1_000_000
