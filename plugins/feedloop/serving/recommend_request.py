"""The POST /recommend request: /rank's fields without candidates (the pod retrieves them), parsed the same way.

Why the same parser for the shared fields (rank_request.shared_fields): a /recommend list becomes impression
events exactly as a /rank list does, so every string bound and the clock window on `ts` must be the same.
Why `limit` is required and at most serving.recommend_candidates: the pod ranks that many retrieved items, so
asking for more could never be answered, and a caller always says how many it will show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedloop.serving.rank_request import (
    MAX_ERRORS, RequestError, RequestLimits, error, json_object, shared_fields, show,
)


@dataclass(frozen=True)
class RecommendRequest:
    tenant_id: str
    user_id: str
    surface: str
    device: str
    query: str | None
    request_id: str | None
    ts_ms: int | None                 # as in RankRequest: None = now
    limit: int                        # return (and log) the top `limit` of the ranked candidates


def parse(body: bytes, *, limits: RequestLimits, max_limit: int, now_ms: int) -> RecommendRequest:
    """The request, or RequestError naming every bad field (max_limit: serving.recommend_candidates)."""
    obj = json_object(body)
    errors: list[dict[str, Any]] = []
    ts_ms = shared_fields(obj, limits=limits, now_ms=now_ms, errors=errors)
    limit = obj.get("limit")
    if limit is None:
        errors.append(error(("limit",), f"missing (required integer from 1 to {max_limit})", "missing"))
    elif not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_limit:
        errors.append(error(("limit",), f"expected an integer from 1 to {max_limit} (serving.recommend_candidates), "
                                        f"got {show(limit)}", "int"))
    if "candidates" in obj:
        errors.append(error(("candidates",), "not accepted: /recommend retrieves its own candidates (send your own "
                                             "to POST /rank)", "extra_forbidden"))
    if errors:
        raise RequestError(422, errors[:MAX_ERRORS])
    return RecommendRequest(tenant_id=obj["tenant_id"], user_id=obj["user_id"], surface=obj["surface"],
                            device=obj["device"], query=obj.get("query"), request_id=obj.get("request_id"),
                            ts_ms=ts_ms, limit=limit)
