"""One closed-loop day's ground-truth audit: the day's candidate and its champion on the day's requests.

Why: the gate judges a candidate with click-based estimates; on simulated traffic the truth is known,
so after each day's retrain the same two models are scored by the hidden utility and the gate's
decision is marked agree / disagree. The truth is taken on the day's whole candidate pools
(`simulate.pools`): each model ranks every request's pool with the features the pods served that day
(the snapshot published as of D), exactly the figure the simulator reports for what was served. The
shown lists (the holdout) are judged too, but only for reference: they were chosen by the champion,
which makes it look worse than it is there. A loop driver (the demo, a bench) calls `audit_day` once per day.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Mapping

import numpy as np
import orjson

from feedloop.ops import audit
from feedloop.core import layout as lake
from feedloop.training import train
from feedloop.core.config import Settings
from feedloop.promotion.registry import Registry
from feedloop.ops.simulate import Ids, World
from feedloop.ops.simulate.pools import DayPools
from feedloop.features import definitions as features
from feedloop.serving.snapshot import Snapshot
from feedloop.core.storage import ObjectStore

LIST_COLUMNS = ("request_id", "user_id", "item_id", "position")


@dataclass(frozen=True)
class DayAudit:
    day: str
    candidate: str                  # the day's candidate version
    champion: str | None            # the version it was evaluated against (None: the first model)
    decision: str | None            # promoted | held; None: the run stopped before the gate
    lists: int                      # requests whose pools were judged (0: no pools or no snapshot as of the day)
    candidate_ndcg: float | None    # ground-truth NDCG@10 of the candidate's top 10 of each request's pool
    champion_ndcg: float | None     # ... of the champion's (the truth the agreement is judged by)
    shown_lists: int                # holdout requests (the lists shown)
    candidate_shown_ndcg: float     # the candidate reranking the shown lists: biased for it (see the module doc)
    champion_shown_ndcg: float | None
    logged_ndcg: float              # the shown lists in the order they were shown in (whoever served the day)
    agreement: str | None           # agree | disagree | level; None: no champion, no decision or no pools


def audit_day(*, settings: Settings, day: date, world: World, ids: Ids, retrain: Mapping[str, Any],
              pools: DayPools | None) -> DayAudit | None:
    """Audit the retrain of `day` (`retrain`: its task outputs, keys evaluate / gate / flip as the demo
    collects them; `pools`: the day's requests with their candidate pools); None when that run evaluated
    no candidate (no training yet, or it failed earlier)."""
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
    pooled = pool_ground_truth(store=store, settings=settings, day=day, pools=pools, models=models, world=world,
                               ids=ids)
    decision = None if not gate else "promoted" if (retrain.get("flip") or {}).get("flipped") else "held"
    cand = None if pooled is None else pooled.ndcg["candidate"]
    champ = None if pooled is None else pooled.ndcg.get("champion")
    return DayAudit(day=day.isoformat(), candidate=evaluation["version"], champion=champion, decision=decision,
                    lists=0 if pooled is None else pooled.lists, candidate_ndcg=cand, champion_ndcg=champ,
                    shown_lists=result.lists, candidate_shown_ndcg=result.ndcg["candidate"],
                    champion_shown_ndcg=result.ndcg.get("champion"), logged_ndcg=result.ndcg["logged"],
                    agreement=None if decision is None else audit.agreement(promoted=decision == "promoted",
                                                                            candidate=cand, champion=champ))


def pool_ground_truth(*, store: ObjectStore, settings: Settings, day: date, pools: DayPools | None,
                      models: Mapping[str, tuple[str, Mapping[str, Any]]], world: World,
                      ids: Ids) -> audit.GroundTruthNdcg | None:
    """Each model (name -> (LightGBM model text, feature manifest)) ranking the whole pools of `day`'s requests
    with the features the pods served that day; None without pools or without a snapshot as of `day`."""
    snapshot = served_snapshot(store, settings.s3.lake_bucket, day)
    if pools is None or snapshot is None or not len(pools):
        return None
    items = np.concatenate([pools.pool(r) for r in range(len(pools))])
    parts = []
    for r in range(len(pools)):
        pool, user = pools.pool(r), pools.users[r]
        authors = [ids.author(int(a)) for a in world.item_author[pool]]
        item_ids = [ids.item(int(i)) for i in pool]
        parts.append(snapshot.inputs(tenant_id=world.tenants[world.user_tenant[user]], user_id=ids.user(user),
                                     surface=pools.surfaces[r], device=pools.devices[r], request_ts=pools.ts[r],
                                     item_ids=item_ids, author_ids=snapshot.authors(item_ids, authors)))
    inputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    scores = {}
    for name, (text, manifest) in models.items():
        names = [f["name"] for f in manifest["features"]]
        if names != list(features.FEATURE_NAMES):
            raise ValueError(f"{name} reads features {names}, not today's definitions: the pools cannot judge it")
        cats = {f["name"]: f["categories"] for f in manifest["features"] if "categories" in f}
        scores[name] = audit.lightgbm_matrix_scores(model_text=text, matrix=features.derive(inputs, cats))
    return audit.pool_ndcg(users=np.asarray(pools.users), offsets=np.asarray(pools.offsets), items=items,
                           scores=scores, world=world)


def served_snapshot(store: ObjectStore, bucket: str, day: date) -> Snapshot | None:
    """The feature snapshot the pods served on `day`: the one published as of `day`, by the run of the day
    before (datasets/ranker/<day - 1>/snapshot/); None when that run built no dataset."""
    prefix = lake.dataset_prefix(day - timedelta(days=1)) + "snapshot/"
    keys = [k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet")]
    if not keys:
        return None
    return Snapshot.from_parquet({k[len(prefix):]: store.get(bucket, k).body for k in keys})


def feature_columns(manifest: Mapping[str, Any]) -> list[str]:
    """The training-set columns a model reads, in model order (its feature manifest names them)."""
    return [f["column"] for f in manifest["features"]]


def read_holdout(store: ObjectStore, bucket: str, day: date, columns: list[str]) -> dict[str, np.ndarray]:
    """`columns` of the holdout split of datasets/ranker/<day>/, its last day's requests only (the split also
    holds the window's earlier exploration lists)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    prefix = lake.dataset_prefix(day) + "split=holdout/"
    keys = sorted(k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet"))
    if not keys:
        raise FileNotFoundError(f"no holdout under {store.uri(bucket, prefix)}: has retrain_ranker run for {day}?")
    read = list(dict.fromkeys([*columns, "day"]))
    table = pa.concat_tables([pq.read_table(io.BytesIO(store.get(bucket, k).body), columns=read) for k in keys])
    table = table.filter(pc.equal(table["day"], pc.max(table["day"])))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in columns}


def _text(store: ObjectStore, bucket: str, key: str) -> str:
    found = store.get(bucket, key)
    if found is None:
        raise FileNotFoundError(f"{store.uri(bucket, key)} is missing")
    return found.body.decode()
