"""One typed configuration object, loaded from include/config/feedloop.yaml with env overrides.

Why: every process (Airflow tasks, the CLI, tests, serving pods) must see the same settings,
and a misspelt key must fail loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "FEEDLOOP_"
_RESERVED_ENV = {"FEEDLOOP_CONFIG", "FEEDLOOP_HOME", "FEEDLOOP_FAILPOINT", "FEEDLOOP_REQUIRE_SERVICES"}


def repo_root() -> Path:
    """The project root: FEEDLOOP_HOME, else the folder holding plugins/feedloop."""
    return Path(os.environ.get("FEEDLOOP_HOME") or Path(__file__).resolve().parents[3])


Severity = Literal["block", "warn"]  # a failed check quarantines its hour (block) or is only recorded and alerted
RankingMetric = Literal["auc", "ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr"]
DebiasedMetric = Literal["ndcg@1", "ndcg@5", "ndcg@10"]  # feedloop.training.counterfactual, estimator snips-ipw
Traffic = Literal["steady", "bursty"]  # feedloop.ops.simulate.traffic: request times, click rates, late events
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]  # what kafka-python and librdkafka both speak


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Section):
    endpoint_url: str = "http://127.0.0.1:8333"
    region: str = "us-east-1"
    lake_bucket: str = "feedloop-lake"
    models_bucket: str = "feedloop-models"
    airflow_conn_id: str = "feedloop_s3"


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "engagement"
    partitions: int = Field(4, ge=1)
    airflow_conn_id: str = "feedloop_kafka"
    # How clients outside Airflow connect (inside Airflow the Connection's extras win, feedloop.core.credentials).
    # Secrets only from the env: KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_KEY_PASSWORD (never this file).
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    ssl_cafile: str | None = None                   # CA bundle (PEM) for the brokers' certificates
    ssl_certfile: str | None = None                 # client certificate (mutual TLS), with ssl_keyfile
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True


class StackSettings(_Section):
    profile: Literal["embedded", "production"] = "embedded"  # production: feedloop.ops.stack.production
    embedded_s3: bool = True
    embedded_kafka: bool = True
    embedded_airflow: bool = True
    s3_port: int = 8333
    s3_internal_port_base: int = 17330
    s3_max_volumes: int = Field(1000, ge=1)  # SeaweedFS volume slots; every bucket takes at least one
    kafka_port: int = 9092
    kafka_storage: Literal["memory", "s3"] = "s3"   # s3 keeps the log across `stack down` / `up`; memory loses it
    airflow_port: int = 8080
    airflow_parallelism: int = Field(4, ge=1)
    ready_timeout_s: float = Field(180, gt=0)


class ProductionSettings(_Section):
    """The production profile's Airflow: PostgreSQL metadata DB, CeleryExecutor, Redis broker."""

    metadata_db_url: str = "postgresql://postgres@127.0.0.1:5432/feedloop_airflow"  # created if missing
    broker_url: str = "redis://127.0.0.1:6379/0"
    workers: int = Field(2, ge=1)                   # Celery workers (separate processes)
    worker_concurrency: int = Field(2, ge=1)        # task slots per worker
    api_workers: int = Field(1, ge=1)               # api-server worker processes
    worker_preload: tuple[str, ...] = ()            # modules each Celery worker imports once, before its tasks


class EventSettings(_Section):
    schema_version: int = 1
    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    max_position: int = Field(200, ge=1)
    max_dwell_ms: int = Field(3_600_000, ge=0)


class SimulateSettings(_Section):
    seed: int = 7
    days: int = Field(3, ge=1)
    events_per_day: int = Field(20_000, ge=1)
    users: int = Field(3000, ge=1)
    items: int = Field(1500, ge=1)
    authors: int = Field(150, ge=1)
    topics: int = Field(12, ge=1)
    list_size: int = Field(12, ge=1)
    exploration_share: float = Field(0.05, ge=0, le=1)
    late_share: float = Field(0.01, ge=0, le=1)
    traffic: Traffic = "steady"  # bursty: heavy-tailed and empty hours, daily CTR swings, events up to 48 h late
    recommend_share: float = Field(0.5, ge=0, le=1)  # requests sent to POST /recommend (demo; simulate --recommend)
    catalog_categories: int = Field(4, ge=0)  # the catalog's `topic` column: N coarse categories; 0 the exact topics


class IngestSettings(_Section):
    schedule: str = "*/15 * * * *"
    group_id: str = "feedloop-ingest"
    chunk_records: int = Field(50_000, ge=1)       # objects are cut at multiples of this many offsets
    max_records_per_run: int = Field(5_000_000, ge=1)
    max_run_seconds: float = Field(600, gt=0)
    max_silent_seconds: float = Field(120, gt=0)  # the broker reports unread records but returns none this long: fail
    poll_timeout_ms: int = Field(1000, ge=1)
    empty_polls_to_stop: int = Field(2, ge=1)
    max_poll_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # bounds the in-flight fetch buffer
    max_lateness_hours: float = Field(72, gt=0)     # event_ts older than arrival - this -> dead letter
    max_skew_minutes: float = Field(10, gt=0)       # event_ts newer than arrival + this -> dead letter
    max_bad_ratio: float = Field(0.01, ge=0, le=1)  # above this the task fails (after saving everything)
    zstd_level: int = Field(3, ge=1, le=22)
    pipeline_depth: int = Field(2, ge=1)            # sealed chunks (and fetched batches) waiting before polling blocks


class QualityThresholds(_Section):
    """Limits an hour partition must meet (quality.thresholds; per tenant in quality.tenants)."""

    max_position: int = Field(200, ge=1)
    max_dwell_ms: int = Field(3_600_000, ge=0)
    volume_mad_k: float = Field(4.0, gt=0)            # rows within the trailing same hour's median +- k robust
                                                      # deviations (1.4826 MAD), on a log scale: heavy tails
    volume_band: float = Field(0.5, ge=0)             # ... and never narrower than median * (1 +- band)
    volume_min_rows: int = Field(1000, ge=0)          # a same-hour median below this is too noisy to judge (skipped)
    ctr_mad_k: float = Field(4.0, gt=0)               # CTR per surface within the trailing same hour's median +- k
    ctr_band: float = Field(0.5, ge=0)                # robust deviations, never narrower than median * (1 +- band)
    ctr_min_impressions: int = Field(200, ge=1)       # fewer impressions (now, or on a baseline day): not judged
    max_unknown_tenant_share: float = Field(0.01, ge=0, le=1)
    max_duplicate_share: float = Field(0.001, ge=0, le=1)  # event ids seen twice (a producer retry) up to this share
    min_position_impressions: int = Field(100, ge=1)  # hours with this many impressions: position 1 holds at most
    max_first_position_share: float = Field(0.5, gt=0, le=1)  # this share of the impressions (lists of 12: ~8 %)
    max_orphan_outcomes: int = Field(10, ge=0)        # outcomes with no impression (request_id, item_id) in the
    max_orphan_share: float = Field(0.05, ge=0, le=1)  # window: up to max(this many, this share of the outcomes);
                                                      # a late impression makes its outcome an orphan until it lands


class TenantThresholds(_Section):
    """Per-tenant overrides of QualityThresholds and of check severities; unset keys fall back to the defaults."""

    max_position: int | None = Field(None, ge=1)
    max_dwell_ms: int | None = Field(None, ge=0)
    volume_mad_k: float | None = Field(None, gt=0)
    volume_band: float | None = Field(None, ge=0)
    volume_min_rows: int | None = Field(None, ge=0)
    ctr_mad_k: float | None = Field(None, gt=0)
    ctr_band: float | None = Field(None, ge=0)
    ctr_min_impressions: int | None = Field(None, ge=1)
    severity: dict[str, Severity] = {}                # check -> block | warn, for this tenant's instances of it


class QualitySettings(_Section):
    suites_dir: Path = Path("include/expectations")  # GX suite templates (relative to the repo root)
    baseline_days: int = Field(7, ge=1)               # trailing days for the volume and CTR baselines
    min_baseline_days: int = Field(3, ge=1)           # fewer validated days: volume / CTR are skipped
    outcome_lookback_hours: int = Field(1, ge=0)      # an outcome may refer to an impression this many hours back
    freshness_lag_hours: float = Field(3, gt=0)       # newest event of the day no older than day end minus this
    thresholds: QualityThresholds = QualityThresholds()
    severity: dict[str, Severity] = {}                # check -> block | warn, over the suites' meta.severity
    tenants: dict[str, TenantThresholds] = {}

    def for_tenant(self, tenant: str | None) -> QualityThresholds:
        override = self.tenants.get(tenant) if tenant else None
        if override is None:
            return self.thresholds
        return self.thresholds.model_copy(update=override.model_dump(exclude_none=True, exclude={"severity"}))

    def severity_of(self, check: str, tenant: str | None, default: Severity) -> Severity:
        """The tenant's override, else the deployment's, else the suite's own severity for `check`."""
        override = self.tenants.get(tenant) if tenant else None
        if override is not None and check in override.severity:
            return override.severity[check]
        return self.severity.get(check, default)


class AlertSettings(_Section):
    slack_conn_id: str = "feedloop_slack"             # Airflow Connection (slackwebhook) for the incoming webhook
    smtp_conn_id: str = "feedloop_smtp"               # Airflow Connection (smtp)
    email_from: str = "feedloop@localhost"
    email_to: tuple[str, ...] = ("ml-oncall@localhost",)
    incident_window_hours: float = Field(24, gt=0)    # a repeat of the same DAG + task + day within this updates
                                                      # the open incident instead of alerting again


class RetrainSettings(_Section):
    schedule: str | None = "@daily"                   # the retrain_ranker DAG (catchup backfills from start_date);
                                                      # None: runs only when triggered (the closed-loop demo)
    start_date: date = date(2026, 11, 1)
    catchup: bool = True                              # false: unpausing runs only the latest day, not every
                                                      # day since start_date (backfill the rest on purpose)


class DatasetSettings(_Section):
    window_days: int = Field(14, ge=1)              # training window [D - window_days, D)
    min_window_days: int = Field(3, ge=3)           # fewer days of data (since retrain.start_date): no training
    on_quarantined: Literal["exclude", "refuse"] = "exclude"  # quarantined hours: left out of the training set,
                                                    # or the whole window refused (and validate fails)
    min_clean_share: float = Field(0.8, ge=0, le=1)  # exclude: refuse the window when fewer of its hours with
                                                    # data are clean (validated, passed / warned / accepted)
    attribution_minutes: int = Field(60, ge=1)      # outcomes count for an impression within this time
    long_dwell_ms: int = Field(30_000, ge=0)
    label_grades: dict[str, int] = {"click": 1, "long_dwell": 2, "like": 2, "share": 3}
    max_ipw: float = Field(10.0, ge=1)              # inverse-propensity weights are clipped here
    min_exploration_impressions: int = Field(300, ge=1)  # per surface; fewer -> click-model propensities
    duckdb_memory_limit: str = "2GB"
    duckdb_threads: int = Field(2, ge=1)
    batch_rows: int = Field(200_000, ge=1000)
    rows_per_file: int = Field(2_000_000, ge=1000)


class ContentSettings(_Section):
    """Item text embeddings (feedloop.content): the catalog's titles and descriptions as vectors."""

    dim: Literal[64, 128, 256] = 256                # WordLlama's 256-d weights, truncated (Matryoshka) if lower
    batch_size: int = Field(256, ge=1)              # texts per embedding call (tokenised and padded together)


class TrainSettings(_Section):
    objective: Literal["lambdarank", "binary"] = "lambdarank"
    num_leaves: int = Field(63, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    min_boost_round: int = Field(50, ge=1)          # early stopping never keeps fewer trees
    min_data_in_leaf: int = Field(50, ge=1)
    max_bin: int = Field(63, ge=2)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    num_threads: int = Field(2, ge=1)
    seed: int = 7
    refit: bool = False                             # after the gate: refit on the whole window; the refit serves


class PromotionSettings(_Section):
    """The promotion gate (feedloop.promotion.gate) and evaluation; a manual retrain run may override keys by params."""

    floors: dict[RankingMetric, Annotated[float, Field(ge=0, le=1)]] = {"auc": 0.52, "ndcg@10": 0.2}  # absolute
    # minimum, overall (raw metrics; every ranking metric lies in [0, 1], so a floor outside can only hold every model)
    # Compared with the champion by the paired bootstrap interval of candidate - champion (raw metrics favour it).
    compare: tuple[DebiasedMetric, ...] = Field(("ndcg@10",), min_length=1)  # the first is the headline
    compare_on: Literal["exploration", "all"] = "exploration"  # exploration lists (random candidates, never
                                                      # trained on; plain metrics) when min_support are judged, else
                                                      # all lists debiased; `all`: always all lists debiased
    unused_half: bool = False                         # exploration: only the half of the lists (by request id)
                                                      # the champion was not promoted on; False: all of them
    compare_days: int = Field(7, ge=0)                # exploration: only lists of the holdout's last N days (0: all)
    tolerance: float = Field(0.025, ge=0)             # overall: promote when the lower bound > -tolerance, hold
                                                      # when the upper bound < -tolerance, else inconclusive
    tolerance_widths: float = Field(1.5, ge=0)        # overall: the tolerance is at most this many half-widths
                                                      # of the interval (0 = off): narrow intervals can tell
    segment_tolerance: float = Field(0.02, ge=0)      # per segment: upper bound < -this holds the candidate
    min_support: int = Field(50, ge=1)                # fewer judged lists: a segment is not gated, overall
                                                      # is inconclusive
    min_gain: float = Field(0, ge=0)                  # overall "not worse" also needs the estimate >= this,
                                                      # else "no gain": the champion stays (0 = off)
    inconclusive: Literal["hold", "approve", "promote"] = "hold"  # overall interval straddles -tolerance:
                                                      # keep the champion | ask a human (approve step) | promote
    confidence: float = Field(0.95, gt=0, lt=1)       # bootstrap interval level
    bootstrap_resamples: int = Field(1000, ge=100)    # resamples of the holdout's lists (seeded)
    bootstrap_seed: int = 7                           # same seed + same holdout = identical intervals
    segments: tuple[str, ...] = ("tenant_id", "surface")
    parity_max_abs_diff: float = Field(1e-5, gt=0)    # ONNX vs LightGBM, |diff| / max(1, |score|) (export.scaled_diff)
    parity_sample_rows: int = Field(5000, ge=1)
    report_history: int = Field(30, ge=1)             # earlier versions in the report's metric history
    canary_percent: float = Field(0, ge=0, le=100)    # > 0: the flip starts a canary at this % of users
    approval_margin: float = Field(0, ge=0, le=1)     # > 0: a gated candidate within this of the champion on
                                                      # every compared (debiased) metric waits for a human (0 = off)
    approval_timeout_minutes: float = Field(1440, gt=0)  # no answer by then = rejected (promotion skipped)


class ServingSettings(_Section):
    """The ranking pods (feedloop.serving): where they listen, how they follow the pointer, their limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1, le=16)           # pods run by `feedloop serve` on port, port+1, ...
    workers: int = Field(1, ge=1, le=32)            # uvicorn worker processes per pod
    poll_interval_s: float = Field(5.0, gt=0)       # one conditional GET of live.json per pod per interval
    retry_initial_s: float = Field(1.0, gt=0)       # a refused or failed load is retried with backoff ...
    retry_max_s: float = Field(60.0, gt=0)          # ... that grows to this and never gives up
    max_candidates: int = Field(1000, ge=1)         # more in one request -> 413
    max_body_bytes: int = Field(1_048_576, ge=1024)  # a larger body -> 413
    max_id_chars: int = Field(128, ge=1)            # tenant_id, user_id, request_id, item_id, author_id; longer -> 422
    max_query_chars: int = Field(512, ge=1)         # query; longer -> 422
    max_clock_skew_seconds: int = Field(300, ge=0)  # /rank `ts` further than this from the pod's clock -> 422
    simulated_time: bool = False                    # simulations only: any `ts` is the time and stamps the Kafka record
    sample_max_abs_diff: float = Field(1e-4, gt=0)  # a loaded model must reproduce the registered sample scores
    onnx_threads: int = Field(1, ge=1)              # intra-op threads per session (2 cores: 1 is fastest)
    loader_nice: int = Field(10, ge=0, le=19)       # the watchers' threads (download, verify, load) yield to requests
    exploration_share: float = Field(0.05, ge=0, le=1)  # lists shown shuffled (explore=true): position bias
    log_impressions: bool = True                    # produce every served list to Kafka as impression events
    impression_buffer: int = Field(20_000, ge=1)    # events held for Kafka; beyond it they are dropped (counted)
    impression_buffer_bytes: int = Field(64 * 1024 * 1024, ge=1_048_576)  # and at most these bytes of them, twice:
                                                    # waiting for the log thread, then in librdkafka's queue
    impression_batch: int = Field(500, ge=1)
    recommend_candidates: int = Field(500, ge=1)    # POST /recommend: items retrieved, then ranked
    cache_dir: Path = Path("serving-cache")         # last-known-good models (relative to state_dir)
    cache_keep_versions: int = Field(3, ge=1)       # versions kept there (the most recently saved + the live one)


class RetrievalSettings(_Section):
    """The two-tower retrieval model (feedloop.retrieval): towers, training, ANN index, evaluation."""

    enabled: bool = True                            # the retrain DAG's retriever task runs (false: skipped)
    positive_events: tuple[str, ...] = ("click", "like", "share")  # what counts as a positive (user, item) pair
    min_user_positives: int = Field(20, ge=1)       # fewer in the window: the user shares the out-of-vocabulary row
    min_item_positives: int = Field(20, ge=1)       # the same for items (a cold item is reached by its features)
    id_dim: int = Field(32, ge=1)                   # id embedding width (users, items, topics, authors)
    hidden: int = Field(64, ge=1)                   # each tower: concat -> Dense(hidden) -> ReLU -> Dense(out_dim)
    out_dim: int = Field(32, ge=1)                  # the L2-normalised vectors compared by inner product
    epochs: int = Field(3, ge=1)                    # more overfit on the bench (recall fell from epoch 3 on)
    batch_size: int = Field(512, ge=2)              # in-batch negatives: the other positives of the same tenant
    temperature: float = Field(0.1, gt=0)
    log_q: Literal["sampling", "exposure"] = "exposure"  # feedloop.retrieval.train._log_q: what the logits lose
    learning_rate: float = Field(0.003, gt=0)
    weight_decay: float = Field(1e-5, ge=0)         # AdamW on every parameter
    seed: int = 7
    hnsw_m: int = Field(32, ge=4)                   # faiss IndexHNSWFlat links per node
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(256, ge=8)               # raised to k when a search asks for more
    recall_at: tuple[int, ...] = Field((100, 500), min_length=1)
    parity_max_abs_diff: float = Field(1e-4, gt=0)  # ONNX towers vs the JAX forward, on L2-normalised vectors
    gate_k: int = Field(100, ge=1)                  # the recall@k the gate compares (one of recall_at)
    gate_on: Literal["exposure", "engaged"] = "exposure"  # exposure-weighted recall on the shown items, or plain
    max_ipw: float = Field(10.0, ge=1)              # exposure weights clipped here (as dataset.max_ipw)
    gate_min_vs_popularity: float = Field(1.0, ge=0)  # gate_on engaged: recall >= this x the popularity baseline's
    gate_tolerance: float = Field(0.01, ge=0)       # held when below the live one (and, exposure: popularity) by more
    gate_tolerance_widths: float = Field(1.5, ge=0)  # exposure: tolerance at most this many half-widths (0 = off)
    gate_min_users: int = Field(50, ge=1)           # fewer holdout users with engagement: held (too little to judge)


class Settings(_Section):
    state_dir: Path = Path(".feedloop")
    s3: S3Settings = S3Settings()
    kafka: KafkaSettings = KafkaSettings()
    stack: StackSettings = StackSettings()
    production: ProductionSettings = ProductionSettings()
    events: EventSettings = EventSettings()
    simulate: SimulateSettings = SimulateSettings()
    ingest: IngestSettings = IngestSettings()
    quality: QualitySettings = QualitySettings()
    alerts: AlertSettings = AlertSettings()
    retrain: RetrainSettings = RetrainSettings()
    dataset: DatasetSettings = DatasetSettings()
    content: ContentSettings = ContentSettings()
    train: TrainSettings = TrainSettings()
    promotion: PromotionSettings = PromotionSettings()
    serving: ServingSettings = ServingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()

    @property
    def state_path(self) -> Path:
        """Absolute state folder (relative paths are taken from the repo root). Not cached: a cached value
        would survive model_copy(update={"state_dir": ...}) and point the copy at the original's folder."""
        return self.state_dir if self.state_dir.is_absolute() else repo_root() / self.state_dir


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """FEEDLOOP_<SECTION>__<KEY>=value (or FEEDLOOP_<KEY> for top-level keys) as a nested dict."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _RESERVED_ENV:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_path() -> Path:
    return Path(os.environ.get("FEEDLOOP_CONFIG") or repo_root() / "include" / "config" / "feedloop.yaml")


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the YAML file, apply FEEDLOOP_* env overrides, validate (unknown keys are errors)."""
    path = path or config_path()
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    data = _merge(data or {}, _env_overrides(dict(os.environ if environ is None else environ)))
    return Settings.model_validate(data)
