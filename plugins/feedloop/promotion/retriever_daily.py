"""One day of the retriever: train on the window before day D, evaluate on D beside the live retriever and
popularity, export with parity, gate, register, flip retriever/live.json. What a daily DAG task will call.

Why D is held out and the version is named after it: as with the ranker, the candidate is judged on a day it
never saw, against the retriever that was live when D ended, and a version of D serves from D + 1 (the flip's
logical date). Why the live retriever is rebuilt from its version files (QueryEncoder + index): that is what
the pods would serve, so the comparison is with what users actually got, not with a retrained twin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.storage import ObjectStore
from feedloop.promotion import retriever as gate
from feedloop.promotion.registry import Registry
from feedloop.retrieval import evaluate, examples, export, items
from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.package import QueryEncoder, version_files
from feedloop.retrieval.towers import Shape
from feedloop.retrieval.train import train

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


def run_day(settings: Settings, *, day: date, store: ObjectStore | None = None, by: str = "retrain_retriever"
            ) -> RetrieverRun:
    """Train on [day - window_days + 1, day), hold out `day`; register the candidate, flip if the gate passes.
    A failed parity registers nothing: the towers would not serve what was evaluated."""
    cfg = settings.retrieval
    store = store or ObjectStore.from_settings(settings)
    registry = Registry(store, settings.s3.models_bucket, layout.RETRIEVER)
    start = day - timedelta(days=settings.dataset.window_days - 1)
    positives, shown = examples.lake_window(settings, store, start=start, end=day)
    holdout, _ = examples.lake_window(settings, store, start=day, end=day + timedelta(days=1))
    catalog = items.load(store, settings.s3.lake_bucket)
    model = train(positives, catalog, cfg, shown)
    index = TenantIndex.build(model.item_vectors(catalog.item_ids), catalog.item_ids, catalog.tenant_ids,
                              m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
    _, user_tenant = evaluate.engaged(holdout)
    sample = sorted(user_tenant)[:PARITY_ROWS]
    parity = export.parity(model.params, model.shape, model.features.queries(sample),
                           model.features.items(catalog.item_ids[:PARITY_ROWS]), threshold=cfg.parity_max_abs_diff)
    models = {"candidate": (model.query_vectors, index)}
    live = registry.live()
    if live is not None:
        models["live"] = _served(registry, live.version)
    results = evaluate.holdout(models=models, train_positives=positives, holdout_positives=holdout, catalog=catalog,
                               ks=cfg.recall_at)
    by_name = {r.name: r for r in results}
    decision = gate.decide(by_name["candidate"], by_name["popularity"], by_name.get("live"), cfg)
    files = version_files(model, index)
    version = f"{day.isoformat()}-{hashlib.sha256(files['query.onnx']).hexdigest()[:10]}"
    run = RetrieverRun(day.isoformat(), version, decision, [r.to_dict() for r in results], parity.to_dict(),
                       train={"positives": positives.num_rows, "seconds": model.seconds,
                              "epoch_losses": list(model.epoch_losses)})
    if not parity.passed:
        return run
    manifest = {"parity": parity.to_dict(), "shape": model.shape.to_dict(), "recall": run.recall,
                "settings": cfg.model_dump(mode="json"), "window": [start.isoformat(), day.isoformat()],
                "champion": None if live is None else live.version}
    pointer = gate.register_and_flip(registry, version=version, files=files, manifest=manifest, decision=decision,
                                     by=by, logical_date=day.isoformat(),
                                     expect_live=None if live is None else live.version)
    return RetrieverRun(run.day, version, decision, run.recall, run.parity, pointer, run.train)


def _served(registry: Registry, version: str) -> tuple[evaluate.QueryVectors, TenantIndex]:
    """The query side and index of a registered retriever, from its files (what a pod would load)."""
    manifest = registry.manifest(version)
    files = {name: registry.read(version, name) for name in manifest["artifacts"]
             if name in ("query.onnx", "vocabs.json", "users.parquet") or name.startswith("index/")}
    encoder = QueryEncoder(files, Shape(**manifest["shape"]))
    return encoder.vectors, TenantIndex.from_files(files)
