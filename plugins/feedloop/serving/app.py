"""The ranking pod's HTTP service: POST /rank, /healthz, /readyz, /version, /metrics.

Started by `feedloop serve` (uvicorn, factory `feedloop.serving.app:create_app`). Every response
carries X-Model-Version; /rank answers with the version that scored it (the canary's for users in
the canary share). A request never waits on S3 or Kafka: the watcher and the impression log run
in their own threads.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from feedloop.features import definitions as features
from feedloop.core.config import Settings, load_settings
from feedloop.features.snapshots import PREFIX as FEATURES_PREFIX
from feedloop.features.snapshots import SNAPSHOTS
from feedloop.core.layout import RANKER_PREFIX as PREFIX, RANKER_VERSIONS_PREFIX as VERSIONS
from feedloop.serving import metrics
from feedloop.serving.impressions import ImpressionLog, ServedList
from feedloop.serving.model import Root
from feedloop.serving.published_features import FeatureFollower
from feedloop.serving.rank_request import RankRequest, RequestError, RequestLimits, parse
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.watcher import Watcher
from feedloop.core.storage import ObjectStore

log = logging.getLogger("feedloop.serving")
ROUTES = ("/rank", "/healthz", "/readyz", "/version", "/metrics")
VERSION_HEADER = "x-model-version"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The pod's app. This factory is the pod's boundary: uvicorn calls it with no argument (`feedloop serve`,
    serving.pods) and the settings are loaded here; a test passes its own."""
    settings = settings or load_settings()
    cfg = settings.serving
    store = ObjectStore.from_settings(settings)
    cache_dir = cfg.cache_dir if cfg.cache_dir.is_absolute() else settings.state_path / cfg.cache_dir
    bucket = settings.s3.models_bucket       # pointers may name folders of this bucket and these prefixes only
    versions, snapshots = Root(bucket, VERSIONS), Root(bucket, SNAPSHOTS)
    followed = FeatureFollower(store=store, bucket=bucket, key=f"{FEATURES_PREFIX}live.json", snapshots=snapshots,
                               cfg=cfg)
    watcher = Watcher(store=store, bucket=bucket, key=f"{PREFIX}live.json", versions=versions, cfg=cfg,
                      cache=LocalCache(cache_dir, versions, keep=cfg.cache_keep_versions), features=followed)
    impressions = ImpressionLog(settings.kafka, cfg) if cfg.log_impressions else None
    limits = RequestLimits.from_settings(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        watcher.start()
        if impressions is not None:
            impressions.start()
        yield
        watcher.stop()
        if impressions is not None:
            impressions.stop()

    app = FastAPI(title="feedloop ranking pod", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/rank")
    async def rank(request: Request) -> Response:
        try:
            body = await _read_body(request, cfg.max_body_bytes)
            now_ms = int(time.time() * 1000)
            req = parse(body, limits=limits, now_ms=now_ms)
        except RequestError as exc:
            return _json({"detail": exc.errors}, exc.status)
        state = watcher.state
        model = state.pick(req.user_id)
        if model is None:
            return _json({"detail": "no model loaded yet: this pod is not ready (see GET /version)"}, 503)
        metrics.CANDIDATES.observe(len(req.item_ids))
        result = _rank(model, req, cfg.exploration_share, now_ms=now_ms, simulated_time=cfg.simulated_time)
        if impressions is not None:
            impressions.submit(result.served)
        return _json(result.body, 200, version=model.version)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "alive"}, 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        live = watcher.state.live
        if live is None:
            return _json({"ready": False, "reason": watcher.status.last_error or "no model loaded yet"}, 503)
        return _json({"ready": True, "version": live.version, "staleness_seconds": watcher.staleness()}, 200)

    @app.get("/version")
    async def version() -> Response:
        body = watcher.describe()
        if impressions is not None:
            body["impressions"] = {"pending": impressions.pending(), "last_error": impressions.last_error}
        return _json(body, 200)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        metrics.STALENESS.set(watcher.staleness() or 0.0)
        metrics.FEATURE_SNAPSHOT_AGE.set(watcher.snapshot_age() or 0.0)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> Response:
        log.exception("request failed")
        return _json({"detail": f"internal error: {type(exc).__name__}: {exc}"[:500]}, 500)

    return _Observed(app, watcher)


class _Ranked:
    def __init__(self, body: dict[str, Any], served: ServedList):
        self.body, self.served = body, served


def _rank(model, req: RankRequest, exploration_share: float, *, now_ms: int, simulated_time: bool) -> _Ranked:
    """Score and order; the impressions' Kafka record gets the pod's clock, or `ts` in a simulation (so a
    simulated day's impressions arrive on that day, as its outcomes do)."""
    ts_ms = req.ts_ms if req.ts_ms is not None else now_ms
    request_id = req.request_id or uuid.uuid4().hex
    authors = model.snapshot.authors(req.item_ids, req.author_ids)
    inputs = model.snapshot.inputs(tenant_id=req.tenant_id, user_id=req.user_id, surface=req.surface,
                                   device=req.device, request_ts=ts_ms / 1000.0, item_ids=req.item_ids,
                                   author_ids=authors)
    scores = model.score(features.derive(inputs, model.categories, model.feature_names))
    explore = _explores(request_id, exploration_share)
    order = shown_order(scores, req.limit, explore=explore, request_id=request_id)
    items = [{"item_id": req.item_ids[i], "author_id": authors[i], "score": float(scores[i]), "position": p}
             for p, i in enumerate(order.tolist(), start=1)]
    served = ServedList(request_id=request_id, tenant_id=req.tenant_id, user_id=req.user_id, surface=req.surface,
                        device=req.device, query=req.query, ts_ms=ts_ms, logged_ms=ts_ms if simulated_time else now_ms,
                        model_version=model.version, explore=explore,
                        item_ids=[it["item_id"] for it in items], author_ids=[it["author_id"] for it in items])
    body = {"request_id": request_id, "model_version": model.version, "explore": explore, "items": items}
    return _Ranked(body, served)


def shown_order(scores: np.ndarray, limit: int, *, explore: bool, request_id: str) -> np.ndarray:
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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, [{"loc": ["body"], "msg": f"{declared} bytes; at most {limit} (serving.max_body_bytes)",
                                  "type": "too_large"}])
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, [{"loc": ["body"], "msg": f"more than {limit} bytes (serving.max_body_bytes)",
                                      "type": "too_large"}])
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: Any, status: int, *, version: str | None = None) -> Response:
    headers = {VERSION_HEADER: version} if version else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


class _Observed:
    """ASGI wrapper: X-Model-Version on every response, latency and status per route (no BaseHTTPMiddleware cost)."""

    def __init__(self, app: FastAPI, watcher: Watcher):
        self.app, self.watcher = app, watcher

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        t0 = time.perf_counter()
        seen: dict[str, Any] = {}

        async def observed_send(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                version = next((v.decode() for k, v in headers if k == VERSION_HEADER.encode()), None)
                if version is None:
                    live = self.watcher.state.live
                    version = live.version if live is not None else "none"
                    headers.append((VERSION_HEADER.encode(), version.encode()))
                    message = {**message, "headers": headers}
                seen["status"], seen["version"] = message["status"], version
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            status = str(seen.get("status", 500))
            metrics.RESPONSES.labels(route, status).inc()
            metrics.REQUEST_SECONDS.labels(route, seen.get("version", "none")).observe(time.perf_counter() - t0)
