"""The ranking pod's HTTP service: POST /rank, POST /recommend, /healthz, /readyz, /version, /metrics.

Started by `feedloop serve` (uvicorn, factory `feedloop.serving.app:create_app`). Every response
carries X-Model-Version; /rank answers with the version that scored it (the canary's for users in
the canary share). /recommend retrieves the candidates with the live retriever (X-Retriever-Version) and
ranks them as /rank does. A request never waits on S3 or Kafka: the watchers and the impression log run
in their own threads.

Readiness (/readyz) is the ranker's: a pod with a ranker serves /rank, so it takes traffic; until it has a
retriever, /recommend answers 503 naming what is missing, and /readyz and /version say so.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from feedloop.core.config import Settings, load_settings
from feedloop.features.snapshots import PREFIX as FEATURES_PREFIX
from feedloop.features.snapshots import SNAPSHOTS
from feedloop.core.layout import RANKER_PREFIX as PREFIX, RANKER_VERSIONS_PREFIX as VERSIONS, RETRIEVER
from feedloop.serving import metrics, ranking, recommend_request
from feedloop.serving.impressions import ImpressionLog
from feedloop.serving.model import Root
from feedloop.serving.published_features import FeatureFollower
from feedloop.serving.rank_request import RequestError, RequestLimits, parse
from feedloop.serving.local_cache import LocalCache
from feedloop.serving.retriever_watcher import RetrieverWatcher
from feedloop.serving.watcher import Watcher
from feedloop.core.storage import ObjectStore

log = logging.getLogger("feedloop.serving")
ROUTES = ("/rank", "/recommend", "/healthz", "/readyz", "/version", "/metrics")
VERSION_HEADER = "x-model-version"
RETRIEVER_HEADER = "x-retriever-version"


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
    retrievers = RetrieverWatcher(store=store, bucket=bucket, cfg=cfg, cache=LocalCache(
        cache_dir / "retriever", Root(bucket, RETRIEVER.versions_prefix), keep=cfg.cache_keep_versions))
    impressions = ImpressionLog(settings.kafka, cfg) if cfg.log_impressions else None
    limits = RequestLimits.from_settings(cfg)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # The pod's imports are ~10^5 objects that live as long as it does: frozen, the collections that
        # follow (automatic ones, and the one after each swap) walk only what came later instead of holding
        # the GIL for tens of ms while requests wait (bench/serve.py, p99 during swaps).
        gc.freeze()
        watcher.start()
        retrievers.start()
        if impressions is not None:
            impressions.start()
        yield
        watcher.stop()
        retrievers.stop()
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
        result = ranking.rank(model, req, cfg.exploration_share, now_ms=now_ms, simulated_time=cfg.simulated_time)
        if impressions is not None:
            impressions.submit(result.served)
        return _json(result.body, 200, version=model.version)

    @app.post("/recommend")
    async def recommend(request: Request) -> Response:
        try:
            body = await _read_body(request, cfg.max_body_bytes)
            now_ms = int(time.time() * 1000)
            req = recommend_request.parse(body, limits=limits, max_limit=cfg.recommend_candidates, now_ms=now_ms)
        except RequestError as exc:
            return _json({"detail": exc.errors}, exc.status)
        model, retriever = watcher.state.pick(req.user_id), retrievers.state.live
        missing = ([] if model is not None else ["no ranker loaded yet"]) + (
            [] if retriever is not None else [f"no retriever: {retrievers.missing()}"])
        if missing:
            return _json({"detail": f"cannot recommend: {'; '.join(missing)} (see GET /version)"}, 503)
        result = ranking.recommend(model, retriever, req, cfg.recommend_candidates, cfg.exploration_share,
                                   now_ms=now_ms, simulated_time=cfg.simulated_time)
        if result is None:
            return _json({"detail": [{"loc": ["body", "tenant_id"], "type": "not_found",
                                      "msg": f"{req.tenant_id!r} has no items in retriever {retriever.version}"}]},
                         404, version=model.version, retriever=retriever.version)
        metrics.CANDIDATES.observe(result.candidates)
        if impressions is not None:
            impressions.submit(result.served)
        return _json(result.body, 200, version=model.version, retriever=retriever.version)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "alive"}, 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        live, retriever = watcher.state.live, retrievers.state.live
        recommend = ({"retriever_version": retriever.version} if retriever is not None
                     else {"recommend": f"503 until a retriever is loaded: {retrievers.missing()}"})
        if live is None:
            return _json({"ready": False, "reason": watcher.status.last_error or "no model loaded yet", **recommend},
                         503)
        return _json({"ready": True, "version": live.version, "staleness_seconds": watcher.staleness(), **recommend},
                     200)

    @app.get("/version")
    async def version() -> Response:
        body = watcher.describe()
        body["retriever"] = retrievers.describe()
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


def _json(body: Any, status: int, *, version: str | None = None, retriever: str | None = None) -> Response:
    headers = {VERSION_HEADER: version} if version else {}
    if retriever:
        headers[RETRIEVER_HEADER] = retriever
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
