"""One day of the retriever: train on the window before day D, evaluate on D beside the live retriever and
popularity, export with parity, gate, register, flip retriever/live.json. What a daily DAG task will call.

Why D is held out and the version is named after it: as with the ranker, the candidate is judged on a day it
never saw, against the retriever that was live when D ended, and a version of D serves from D + 1 (the flip's
logical date). Why the live retriever is rebuilt from its version files (QueryEncoder + index): that is what
the pods would serve, so the comparison is with what users actually got, not with a retrained twin. Why the
rival is the retriever live at the end of D (Registry.champion_of), not today's: on a backfill the live one may
have been trained on D itself.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import pyarrow as pa

from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.promotion import retriever as gate
from feedloop.promotion.registry import Registry, version_day
from feedloop.retrieval import evaluate, examples, export, items
from feedloop.retrieval.counterfactual import WeightedRecall, examined, exposure_weights, on_support, weighted_recall
from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.package import QueryEncoder, version_files
from feedloop.retrieval.towers import Shape
from feedloop.retrieval.train import train
from feedloop.training.counterfactual import Bootstrap

PARITY_ROWS = 1000  # users and items each, from the holdout day's users and the catalog


@dataclass(frozen=True)
class RetrieverRun:
    day: str
    version: str
    decision: gate.RetrieverDecision
    recall: list[dict[str, Any]]
    parity: dict[str, Any]
    pointer: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    weighted: dict[str, Any] = field(default_factory=dict)  # WeightedRecall.to_dict()
    resumed: bool = False  # a version of the day was registered before: nothing was trained

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.to_dict()}


def run_day(settings: Settings, *, day: date, store: ObjectStore | None = None, by: str = "retrain_retriever",
            excluded: Collection[str] = frozenset()) -> RetrieverRun:
    """Train on [day - window_days + 1, day), hold out `day`; register the candidate, flip if the gate passes.
    A failed parity registers nothing: the towers would not serve what was evaluated. `excluded`: hour
    partitions (dt=D/hour=HH) left out of the training and holdout examples (quarantined ones).

    Idempotent per day: once a version of `day` is registered, a re-run (an Airflow retry, a cleared task, a
    backfill of the day) trains nothing and returns it with its recorded decision, flipping only when that
    decision passed and the pointer is still the one it was judged against (a retry after a crash between
    register and flip). A backfill never moves the pointer back to an older day's retriever."""
    cfg = settings.retrieval
    store = store or ObjectStore.from_settings(settings)
    registry = Registry(store, settings.s3.models_bucket, layout.RETRIEVER)
    done = [v for v in registry.versions() if version_day(v) == day]
    if done:
        return _resume(registry, done[-1], by=by)
    start = day - timedelta(days=settings.dataset.window_days - 1)
    positives, shown = examples.lake_window(settings, store, start=start, end=day, excluded=excluded)
    holdout, _ = examples.lake_window(settings, store, start=day, end=day + timedelta(days=1), excluded=excluded)
    shown, curves = examples.lake_exposure(settings, store, start=start, day=day, excluded=excluded)
    catalog = items.load(store, settings.s3.lake_bucket)
    model = train(positives, catalog, cfg, shown)
    index = TenantIndex.build(model.item_vectors(catalog.item_ids), catalog.item_ids, catalog.tenant_ids,
                              m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
    relevant, user_tenant = evaluate.engaged(holdout)
    sample = sorted(user_tenant)[:PARITY_ROWS]
    parity = export.parity(model.params, model.shape, model.features.queries(sample),
                           model.features.items(catalog.item_ids[:PARITY_ROWS]), threshold=cfg.parity_max_abs_diff)
    models = {"candidate": (model.query_vectors, index)}
    champion = registry.champion_of(day)
    if champion is not None:
        models["live"] = _served(registry, champion)
    lists = evaluate.retrieved(models=models, train_positives=positives, catalog=catalog, user_tenant=user_tenant,
                               k=max(cfg.recall_at))
    results = evaluate.scored(lists, train_positives=positives, holdout_positives=holdout, catalog=catalog,
                              ks=cfg.recall_at)
    weighted = _weighted(settings, models, relevant, user_tenant, positives, examined(shown, curves), catalog)
    by_name = {r.name: r for r in results}
    decision = gate.decide(by_name["candidate"], by_name["popularity"], by_name.get("live"), cfg, weighted=weighted)
    files = version_files(model, index)
    version = f"{day.isoformat()}-{hashlib.sha256(files['query.onnx']).hexdigest()[:10]}"
    run = RetrieverRun(day.isoformat(), version, decision, [r.to_dict() for r in results], parity.to_dict(),
                       train={"positives": positives.num_rows, "seconds": model.seconds,
                              "epoch_losses": list(model.epoch_losses)}, weighted=weighted.to_dict())
    if not parity.passed:
        return run
    manifest = {"parity": parity.to_dict(), "shape": model.shape.to_dict(), "recall": run.recall,
                "exposure_weighted": run.weighted, "settings": cfg.model_dump(mode="json"),
                "window": [start.isoformat(), day.isoformat()], "excluded_hours": sorted(excluded),
                "champion": champion, "train": run.train}
    live = registry.live()
    if live is not None and (version_day(live.version) or date.min) >= day:  # a backfill: never back in time
        decision = replace(decision, promote=False, failed=(*decision.failed, f"live {live.version} is not older"))
    pointer = gate.register_and_flip(registry, version=version, files=files, manifest=manifest, decision=decision,
                                     by=by, logical_date=day.isoformat(),
                                     expect_live=None if live is None else live.version)
    return replace(run, decision=decision, pointer=pointer)


def _resume(registry: Registry, version: str, *, by: str) -> RetrieverRun:
    """A registered version of the day, as its run recorded it; flipped now only if its flip never happened."""
    manifest = registry.manifest(version)
    decision = gate.RetrieverDecision.from_dict(manifest["gate"])
    live = registry.live()
    pointer = None
    if decision.promote and (None if live is None else live.version) == manifest["champion"]:
        pointer = registry.flip(version=version, by=by, reason=decision.reason, logical_date=version[:10],
                                expect_live=manifest["champion"])
    return RetrieverRun(version[:10], version, decision, manifest["recall"], manifest["parity"], pointer,
                        manifest.get("train", {}), manifest.get("exposure_weighted", {}), resumed=True)


def _weighted(settings: Settings, models: dict[str, tuple[evaluate.QueryVectors, TenantIndex]],
              relevant: dict[str, set[str]], user_tenant: dict[str, str], positives: pa.Table,
              exposure: dict[str, float], catalog: items.Catalog) -> WeightedRecall:
    """The gate's exposure-weighted recall: every model's and popularity's top k among the items each tenant showed
    on the day (retrieval.counterfactual.on_support), engaged items weighted by the inverse of their examination
    mass that day (`exposure`), paired against popularity and the live retriever."""
    cfg, promotion = settings.retrieval, settings.promotion
    item_tenant = dict(zip(catalog.item_ids.tolist(), catalog.tenant_ids.tolist()))
    support: dict[str, list[str]] = {}
    for item in exposure:
        if item in item_tenant:
            support.setdefault(item_tenant[item], []).append(item)
    lists = on_support(models=models, shown=support, popularity=Counter(positives["item_id"].to_pylist()),
                       user_tenant=user_tenant, k=max(cfg.recall_at))
    paired = [("candidate", rival) for rival in ("popularity", "live") if rival in lists]
    return weighted_recall(lists=lists, relevant=relevant,
                           weights=exposure_weights(exposure, item_tenant, max_weight=cfg.max_ipw),
                           ks=cfg.recall_at, paired=paired, max_weight=cfg.max_ipw,
                           bootstrap=Bootstrap(promotion.bootstrap_resamples, promotion.confidence,
                                               promotion.bootstrap_seed))


def _served(registry: Registry, version: str) -> tuple[evaluate.QueryVectors, TenantIndex]:
    """The query side and index of a registered retriever, from its files (what a pod would load)."""
    manifest = registry.manifest(version)
    files = {name: registry.read(version, name) for name in manifest["artifacts"]
             if name in ("query.onnx", "vocabs.json", "users.parquet") or name.startswith("index/")}
    encoder = QueryEncoder(files, Shape(**manifest["shape"]))
    return encoder.vectors, TenantIndex.from_files(files)
