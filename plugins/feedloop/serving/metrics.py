"""The pod's Prometheus metrics, correct with several uvicorn workers.

Why multiprocess mode: with `--workers N` every worker has its own model and counters; when
PROMETHEUS_MULTIPROC_DIR is set (`feedloop serve` sets it for N > 1) prometheus_client writes
each worker's values to files there and /metrics merges them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)

LIVE_MODEL = Gauge("feedloop_live_model", "1 for each model version this pod serves, by role (live, canary)",
                   ["version", "sha256", "role"], multiprocess_mode="liveall")
REQUEST_SECONDS = Histogram("feedloop_request_seconds", "Request latency by route and the model version that answered",
                            ["route", "model_version"], buckets=LATENCY_BUCKETS)
RESPONSES = Counter("feedloop_responses_total", "Responses by route and HTTP status", ["route", "status"])
SWAP_SECONDS = Histogram("feedloop_swap_seconds", "Download, verification and warm-up time of a model swap",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
SWAPS = Counter("feedloop_swaps_total", "Models swapped in, by role", ["role"])
SWAP_FAILURES = Counter("feedloop_swap_failures_total", "Refused or failed model loads (the old model keeps serving)",
                        ["reason"])
RETRIEVER_SWAPS = Counter("feedloop_retriever_swaps_total", "Retriever versions swapped in")
RETRIEVER_SWAP_FAILURES = Counter("feedloop_retriever_swap_failures_total",
                                  "Refused or failed retriever loads (the old retriever keeps serving)", ["reason"])
POLL_ERRORS = Counter("feedloop_poll_errors_total",
                      "Pointer checks (ranker/live.json, features/live.json) that failed (S3 unreachable or erroring)")
FEATURE_SNAPSHOT = Gauge("feedloop_feature_snapshot",
                         "1 for the feature snapshot each served model scores with, by role (live, canary)",
                         ["snapshot", "as_of", "source", "role"], multiprocess_mode="liveall")
FEATURE_SNAPSHOT_AGE = Gauge("feedloop_feature_snapshot_age_seconds",
                             "Seconds since the as_of day of the live model's feature snapshot began",
                             multiprocess_mode="max")
FEATURE_SNAPSHOT_SWAPS = Counter("feedloop_feature_snapshot_swaps_total",
                                 "Published feature snapshots loaded and verified (then bound to the models)")
FEATURE_SNAPSHOT_REFUSALS = Counter("feedloop_feature_snapshot_refusals_total",
                                    "Refused published feature snapshots (the models keep theirs), by reason",
                                    ["reason"])
STALENESS = Gauge("feedloop_pointer_staleness_seconds", "Seconds since this pod last read live.json successfully",
                  multiprocess_mode="max")
READY = Gauge("feedloop_ready", "1 when this pod has a model to serve", multiprocess_mode="min")
CANDIDATES = Histogram("feedloop_candidates_per_request", "Candidates per ranking request",
                       buckets=(1, 10, 50, 100, 200, 500, 1000, 2000))
IMPRESSIONS_SENT = Counter("feedloop_impressions_sent_total", "Impression events produced to Kafka")
IMPRESSIONS_DROPPED = Counter("feedloop_impressions_dropped_total",
                              "Impression events dropped, never blocking a request, by reason: buffer_full (the "
                              "pod's buffer), producer_queue_full (librdkafka's), message_too_large, produce_error "
                              "(anything else produce() raised), kafka_error (not delivered)",
                              ["reason"])


def exposition() -> bytes:
    """The text exposition of every worker's metrics (merged in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)

