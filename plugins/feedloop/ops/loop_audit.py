"""One closed-loop day's ground-truth audit: the day's candidate and its champion on the day's requests.

Why: the gate judges a candidate with click-based estimates; on simulated traffic the truth is known,
so after each day's retrain the same two models are scored by the hidden utility on the day's
holdout (datasets/ranker/<D>/split=holdout/: the requests of day D, as shown) and the gate's decision
is marked agree / disagree. A loop driver (the demo, a bench) calls `audit_day` once per day.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from typing import Any, Mapping

import numpy as np
import orjson

from feedloop.ops import audit
from feedloop.core import layout as lake
from feedloop.training import train
from feedloop.core.config import Settings
from feedloop.promotion.registry import Registry
from feedloop.ops.simulate import Ids, World
from feedloop.core.storage import ObjectStore

LIST_COLUMNS = ("request_id", "user_id", "item_id", "position")


@dataclass(frozen=True)
class DayAudit:
    day: str
    candidate: str                  # the day's candidate version
    champion: str | None            # the version it was evaluated against (None: the first model)
    decision: str | None            # promoted | held; None: the run stopped before the gate
    lists: int                      # holdout requests judged
    candidate_ndcg: float           # ground-truth NDCG@10 of the candidate's order of the shown lists
    champion_ndcg: float | None
    logged_ndcg: float              # ... of the order they were shown in (whoever served the day)
    agreement: str | None           # agree | disagree | level; None: no champion or no decision


def audit_day(*, settings: Settings, day: date, world: World, ids: Ids,
              retrain: Mapping[str, Any]) -> DayAudit | None:
    """Audit the retrain of `day` (`retrain`: its task outputs, keys evaluate / gate / flip as the demo
    collects them); None when that run evaluated no candidate (no training yet, or it failed earlier)."""
    evaluation = retrain.get("evaluate")
    if not evaluation:
        return None
    gate = retrain.get("gate")
    champion = (gate or evaluation).get("champion")
    store = ObjectStore.from_settings(settings)
    run = train.run_prefix(day)
    models = {"candidate": (_text(store, settings.s3.models_bucket, run + "model.txt"),
                            orjson.loads(_text(store, settings.s3.models_bucket, run + "feature_manifest.json")))}
    if champion:
        registry = Registry(store, settings.s3.models_bucket)
        models["champion"] = (registry.read(champion, "model.txt").decode(),
                              registry.manifest(champion)["feature_manifest"])
    needed = {name: feature_columns(manifest) for name, (_, manifest) in models.items()}
    columns = read_holdout(store, settings.s3.lake_bucket, day,
                           list(dict.fromkeys([*LIST_COLUMNS, *(c for cs in needed.values() for c in cs)])))
    scores = {name: audit.lightgbm_scores(model_text=text, feature_columns=needed[name], columns=columns)
              for name, (text, _) in models.items()}
    scores["logged"] = -columns["position"].astype(np.float64)
    result = audit.ground_truth_ndcg(request_ids=columns["request_id"], user_ids=columns["user_id"],
                                     item_ids=columns["item_id"], positions=columns["position"], scores=scores,
                                     world=world, ids=ids)
    decision = None if not gate else "promoted" if (retrain.get("flip") or {}).get("flipped") else "held"
    cand, champ = result.ndcg["candidate"], result.ndcg.get("champion")
    return DayAudit(day=day.isoformat(), candidate=evaluation["version"], champion=champion, decision=decision,
                    lists=result.lists, candidate_ndcg=cand, champion_ndcg=champ, logged_ndcg=result.ndcg["logged"],
                    agreement=None if decision is None else audit.agreement(promoted=decision == "promoted",
                                                                            candidate=cand, champion=champ))


def feature_columns(manifest: Mapping[str, Any]) -> list[str]:
    """The training-set columns a model reads, in model order (its feature manifest names them)."""
    return [f["column"] for f in manifest["features"]]


def read_holdout(store: ObjectStore, bucket: str, day: date, columns: list[str]) -> dict[str, np.ndarray]:
    """`columns` of the holdout split of datasets/ranker/<day>/ (the requests of `day`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = lake.dataset_prefix(day) + "split=holdout/"
    keys = sorted(k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet"))
    if not keys:
        raise FileNotFoundError(f"no holdout under {store.uri(bucket, prefix)}: has retrain_ranker run for {day}?")
    table = pa.concat_tables([pq.read_table(io.BytesIO(store.get(bucket, k).body), columns=columns) for k in keys])
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in columns}


def _text(store: ObjectStore, bucket: str, key: str) -> str:
    found = store.get(bucket, key)
    if found is None:
        raise FileNotFoundError(f"{store.uri(bucket, key)} is missing")
    return found.body.decode()
