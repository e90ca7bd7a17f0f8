"""The POST /recommend scenario of bench/serve.py (`--recommend`): retrieve 500 of a 100,000-item catalog, rank them.

A synthetic retriever version (tests/support/retrieverdata.py: seeded towers of the production widths, random unit
item vectors, the real per-tenant faiss HNSW with the production m and ef_search) over servingworld's ids: items
0..99,999 across its three tenants (33,334 per tenant index; the first 20,000 are in the ranker's snapshot, the
rest are new to it, as fresh items are), its 47,500 known users in the retriever's vocabulary. Registered and
flipped in the bench's embedded S3 beside the ranker, so the pod loads both as in production.

Measured in the same run: in-process, bare `session.run` of the ranker on 500-candidate matrices, the retrieval
step (query tower + index search) and the whole /recommend handler body; over HTTP against one pod pinned to one
core (taskset, every thread), /rank with 500 candidates and /recommend retrieving 500, at concurrency 1.
"""

from __future__ import annotations

import os
import subprocess
import time

CATALOG = 100_000
RETRIEVED = 500
LIMIT = 50


def retriever_version(version: str):
    """The synthetic 100,000-item retriever (about a minute to build the indexes on a busy core)."""
    from bench import servingworld
    from feedloop.core.config import RetrievalSettings
    from tests.support import retrieverdata

    cfg = RetrievalSettings()
    items = [servingworld.item_id(i) for i in range(CATALOG)]
    tenants = [servingworld.TENANTS[i % 3] for i in range(CATALOG)]
    users = [servingworld.user_id(u) for u in range(servingworld.KNOWN_USERS)]
    return retrieverdata.make_version(version, item_ids=items, tenant_ids=tenants, user_ids=users, seed=11,
                                      id_dim=cfg.id_dim, hidden=cfg.hidden, out_dim=cfg.out_dim, m=cfg.hnsw_m,
                                      ef_construction=80, ef_search=cfg.ef_search)


def bodies(rank_bodies: list[dict]) -> list[dict]:
    """/recommend bodies for the same users, surfaces and devices as the /rank bodies."""
    return [{k: b[k] for k in ("tenant_id", "user_id", "surface", "device", "ts")} | {"limit": LIMIT}
            for b in rank_bodies]


def in_process(model, retriever_files: dict, manifest: dict, rank_bodies: list[dict], cfg, rounds: int) -> dict:
    """session.run, retrieval and the /recommend handler body, timed one by one in this process (pods idle)."""
    import numpy as np
    import orjson

    from bench import servingworld
    from bench.serve import summary
    from feedloop.serving import ranking, recommend_request
    from feedloop.serving.model import Target
    from feedloop.serving.rank_request import RequestLimits
    from feedloop.serving.retriever import build, parse_manifest
    from feedloop.training import export

    target = Target(manifest["version"], "s3://bench/retriever/versions/x/",
                    manifest["artifacts"]["query.onnx"]["sha256"])
    manifest, shape = parse_manifest(target, orjson.dumps(manifest))
    retriever = build(target, manifest, shape, retriever_files, onnx_threads=cfg.onnx_threads, warmup_k=RETRIEVED)
    limits = RequestLimits.from_settings(cfg.model_copy(update={"simulated_time": True}))
    encoded = [orjson.dumps(b) for b in bodies(rank_bodies)]
    matrices = [servingworld.matrix_of(model.snapshot, b, servingworld.T0) for b in rank_bodies]

    def handler(i: int) -> bytes:
        req = recommend_request.parse(encoded[i], limits=limits, max_limit=RETRIEVED, now_ms=0)
        return orjson.dumps(ranking.recommend(model, retriever, req, RETRIEVED, cfg.exploration_share, now_ms=0,
                                              simulated_time=True).body)

    steps = {"session.run": lambda i: model.session.run(None, {export.INPUT_NAME: matrices[i]}),
             "retrieve": lambda i: retriever.candidates(rank_bodies[i]["tenant_id"], rank_bodies[i]["user_id"],
                                                        RETRIEVED),
             "recommend_handler": handler}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for k in range(rounds):
        for name, step in steps.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            step(k % len(encoded))
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    return {name: {**summary(wall[name]), "cpu_p50_ms": round(float(np.percentile(cpu[name], 50)) * 1000, 2)}
            for name in steps} | {"retriever_load_s": round(retriever.load_seconds, 2)}


def http_phase(pod, rank_bodies: list[dict], seconds: float) -> dict:
    """/rank (500 candidates) then /recommend (500 retrieved) at concurrency 1, the pod pinned to one core."""
    import orjson

    from bench.serve import http_summary, run_for

    pid = pod.processes[0].pid()
    subprocess.run(["taskset", "-a", "-cp", "1", str(pid)], check=True, capture_output=True)
    out = {"pod_cpus": "1 (taskset -a)"}
    for name, path, payload in (("rank", "/rank", rank_bodies), ("recommend", "/recommend", bodies(rank_bodies))):
        requests = [("POST", path, orjson.dumps(b)) for b in payload]
        records, cpu_ms = run_for(requests, [pod.port], clients=1, seconds=seconds, pid=pid)
        out[f"{name}_c1"] = {**http_summary(records), "pod_cpu_ms_per_request": cpu_ms,
                             "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    return out


def run(args, echo) -> dict:
    """The whole scenario on its own embedded stack; writes bench/results/serve-recommend.json."""
    import json
    import tempfile
    from pathlib import Path

    import orjson

    from bench import servingworld
    from bench.serve import ROOT, VERSIONS, _free_block, uptime
    from bench.serve import bodies as rank_bodies_of
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore
    from feedloop.core.streams import ensure_topic
    from feedloop.ops import stack
    from feedloop.promotion.registry import Registry
    from feedloop.serving.model import Target, build
    from feedloop.serving.pods import Pods
    from tests.conftest import stack_environ
    from tests.support import retrieverdata

    load_before = uptime()
    os.environ.update(stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-bench-recommend-"))))
    settings = load_settings()
    ranker, cached = servingworld.cached_version(VERSIONS[0], seed=1, shape=servingworld.Shape.of(settings.train),
                                                 root=ROOT / "bench" / "results" / "serve-models")
    echo(f"ranker {ranker.version}: {'cached' if cached else 'trained'}; building the {CATALOG:,}-item retriever ...")
    t0 = time.perf_counter()
    retriever = retriever_version("2026-11-24-ec01")
    build_s = time.perf_counter() - t0
    stack.up(settings, echo=echo)
    pods = None
    try:
        store = ObjectStore.from_settings(settings)
        bucket, topic = "bench-recommend-models", "bench-recommend-impressions"
        store.ensure_bucket(bucket)
        ensure_topic(settings.kafka, topic=topic)
        registry = Registry(store, bucket)
        manifest = registry.register(version=ranker.version, files=ranker.files, manifest=ranker.manifest)
        registry.flip(version=ranker.version, by="bench", reason="bench/serve.py --recommend")
        retrieverdata.publish(store, bucket, retriever)
        retriever_manifest = retrieverdata.registry(store, bucket).manifest(retriever.version)
        env = {"FEEDLOOP_S3__MODELS_BUCKET": bucket, "FEEDLOOP_KAFKA__TOPIC": topic,
               "FEEDLOOP_SERVING__SIMULATED_TIME": "true", "FEEDLOOP_SERVING__LOG_IMPRESSIONS": "true"}
        pods = Pods(settings, port=_free_block(1), replicas=1, workers=1, env=env)
        pods.start()
        pods.wait_for(ranker.version, timeout=300)
        _wait_for_retriever(pods.urls[0], retriever.version)
        model = build(Target(ranker.version, registry.version_uri(ranker.version),
                             manifest["artifacts"]["model.onnx"]["sha256"]), manifest, ranker.files,
                      onnx_threads=settings.serving.onnx_threads,
                      sample_max_abs_diff=settings.serving.sample_max_abs_diff, source="bench")
        requests = rank_bodies_of(256)
        echo("in-process timings ...")
        inproc = in_process(model, retriever.files, retriever_manifest, requests, settings.serving,
                            rounds=200 if args.quick else 500)
        del model
        echo("latency over HTTP ...")
        http = http_phase(pods, requests, args.seconds)
    finally:
        if pods is not None:
            pods.stop()
        stack.down(settings, echo=lambda m: None)
    result = {"machine_cpus": os.cpu_count(), "uptime_before": load_before, "uptime_after": uptime(),
              "config": {"catalog": CATALOG, "retrieved": RETRIEVED, "limit": LIMIT, "rank_candidates": len(
                  requests[0]["candidates"]), "onnx_threads": settings.serving.onnx_threads,
                  "retriever_build_s": round(build_s, 1), "retriever": retriever_manifest["shape"],
                  "ranker": ranker.stats, "seconds_per_run": args.seconds, "impressions": "on"},
              "in_process": inproc, "http": http}
    out = ROOT / "bench" / "results" / "serve-recommend.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(orjson.dumps({"in_process": inproc, "http": http}, option=orjson.OPT_INDENT_2).decode())
    print(f"load: before [{load_before}]  after [{result['uptime_after']}]\nwrote {out}")
    return result


def _wait_for_retriever(url: str, version: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while (httpx.get(f"{url}/version", timeout=10).json()["retriever"]["live"] or {}).get("version") != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"retriever {version} not live after {timeout:.0f}s: {httpx.get(f'{url}/version').text}")
        time.sleep(0.5)
