"""Train the LightGBM ranker on a built training set (LambdaRank by default, binary as an option).

Data goes from Parquet on S3 into LightGBM as Arrow (no pandas copy of the set); groups are the
request_ids (rows of a request are contiguous in the set); early stopping on the validation
day (feedloop.training.selection); seeded and single-source-of-truth params from include/config/ (train:).
"""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedloop.features import definitions as features
from feedloop.core import layout as lake
from feedloop.core.config import Settings, TrainSettings
from feedloop.core.storage import ObjectStore
from feedloop.training import selection

log = logging.getLogger(__name__)
RUNS_PREFIX = "ranker/runs/"
LOAD_THREADS = 4   # part files of a split fetched and decoded at once


def run_prefix(day: date) -> str:
    """The candidate's workspace in the models bucket, before it is registered as a version."""
    return f"{RUNS_PREFIX}{day.isoformat()}/"


@dataclass
class TrainResult:
    day: str
    uri: str                      # s3://<models>/ranker/runs/<D>/
    objective: str
    best_iteration: int
    valid_metric: dict[str, float]
    train_rows: int
    train_groups: int
    valid_rows: int
    seconds: float
    load_seconds: float


def lgb_params(cfg: TrainSettings, objective: str) -> dict:
    params = {
        "objective": objective,
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "max_bin": cfg.max_bin,
        "feature_fraction": cfg.feature_fraction,
        "num_threads": cfg.num_threads,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if objective == "lambdarank":
        params.update({"lambdarank_truncation_level": 20})
    params["metric"] = "None"  # model selection uses selection.ipw_ndcg for both objectives
    return params


def load_split(settings: Settings, day: date, split: str, *, explore: bool | None = None,
               names: Sequence[str] = features.FEATURE_NAMES, store: ObjectStore | None = None) -> pa.Table:
    """One split of the training set as Arrow, in file order (requests contiguous); `explore`: only the
    exploration lists (True), only the others (False, a null flag counts as not explored) or all (None);
    `names`: the features to read (bench/content_features.py trains without some on the same rows).

    Why the part files are fetched concurrently and decoded by Arrow (threads: neither holds the GIL) rather
    than read through DuckDB's httpfs: that read them range by range on two threads, 1.97 s of train.train's
    54.8 s at 10M impressions where bare LightGBM reads nothing (bench/train.py, 2026-12-06)."""
    store = store or ObjectStore.from_settings(settings)
    bucket, prefix = settings.s3.lake_bucket, f"{lake.dataset_prefix(day)}split={split}/"
    columns = ["request_id", "label", "label_binary", "weight"] + [features.column(n) for n in names]
    keys = sorted(k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet"))
    if not keys:
        raise FileNotFoundError(f"no rows in s3://{bucket}/{prefix}: the training set for {day} was not built, or "
                                f"the {split} split's days had no impressions (check dataset.window_days and the "
                                "lake inventory)")

    def part(key: str) -> pa.Table:
        found = store.get(bucket, key)
        if found is None:
            raise FileNotFoundError(f"s3://{bucket}/{key} was listed but is gone: the training set for {day} was "
                                    "rebuilt meanwhile; run the task again")
        table = pq.read_table(pa.BufferReader(found.body), columns=columns + ([] if explore is None else ["explore"]))
        if explore is not None:
            explored = pc.fill_null(table["explore"], False)
            table = table.filter(explored if explore else pc.invert(explored)).select(columns)
        return table

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        return pa.concat_tables(pool.map(part, keys))


def group_sizes(request_ids: pa.ChunkedArray) -> np.ndarray:
    """Sizes of runs of equal consecutive request_ids (LightGBM's query groups; nulls are one id).

    Compared by Arrow on the string buffers, chunk by chunk: as numpy objects, 8M ids (lists of 25, the train
    split of 10M impressions) took 0.84 s, which bare LightGBM does not pay; 0.10 s here (measured 2026-12-06)."""
    if len(request_ids) == 0:
        return np.zeros(0, dtype=np.int32)
    current, previous = request_ids.slice(1), request_ids.slice(0, len(request_ids) - 1)
    both_null = pc.and_(pc.is_null(current), pc.is_null(previous))
    changed = pc.if_else(both_null, False, pc.fill_null(pc.not_equal(current, previous), True))
    starts = np.flatnonzero(np.r_[True, changed.to_numpy(zero_copy_only=False)])
    return np.diff(np.r_[starts, len(request_ids)]).astype(np.int32)


def to_lgb_dataset(table: pa.Table, objective: str, *, reference=None, max_bin: int = 63,
                   groups: np.ndarray | None = None, names: Sequence[str] = features.FEATURE_NAMES):
    """LightGBM Dataset straight from the Arrow table; `groups`: the request_ids' group_sizes if already known;
    `names`: the features it holds, in order."""
    import lightgbm as lgb

    names = list(names)
    matrix = table.select([features.column(n) for n in names]).rename_columns(names)
    label_col = "label" if objective == "lambdarank" else "label_binary"
    cat_idx = [i for i, n in enumerate(names) if features.BY_NAME[n].kind == "categorical"]
    if objective == "lambdarank" and groups is None:
        groups = group_sizes(table["request_id"])
    return lgb.Dataset(
        matrix,
        label=table[label_col].to_numpy(),
        weight=table["weight"].to_numpy(),
        group=groups if objective == "lambdarank" else None,
        categorical_feature=cat_idx,
        reference=reference,
        params={"max_bin": max_bin, "verbosity": -1},
        free_raw_data=True,
    )


def fit(cfg: TrainSettings, objective: str, dtrain, dvalid, metric: selection.Feval):
    """lgb.train on dtrain, the rounds chosen by `metric` on dvalid: the booster and its validation score."""
    import lightgbm as lgb

    stopping = selection.EarlyStopping(metric, patience=cfg.early_stopping_rounds, min_rounds=cfg.min_boost_round)
    booster = lgb.train(lgb_params(cfg, objective), dtrain, num_boost_round=cfg.num_boost_round, valid_sets=[dvalid],
                        valid_names=["valid"], callbacks=[stopping])
    return booster, stopping.metric_at(booster.best_iteration)


def train(settings: Settings, *, day: date, objective: str | None = None,
          store: ObjectStore | None = None) -> TrainResult:
    """Fit on split=train, early-stop on split=valid, save model + manifest + metrics to the run folder."""
    cfg = settings.train
    objective = objective or cfg.objective
    store = store or ObjectStore.from_settings(settings)
    t0 = time.perf_counter()
    train_t, valid_t = (load_split(settings, day, split, store=store) for split in ("train", "valid"))
    load_s = time.perf_counter() - t0
    if train_t.num_rows == 0 or valid_t.num_rows == 0:
        raise ValueError(f"training set {lake.dataset_prefix(day)} has an empty train or valid split; "
                         "check dataset.window_days and the lake inventory")
    train_groups, valid_groups = group_sizes(train_t["request_id"]), group_sizes(valid_t["request_id"])
    dtrain = to_lgb_dataset(train_t, objective, max_bin=cfg.max_bin, groups=train_groups)
    dvalid = to_lgb_dataset(valid_t, objective, reference=dtrain, max_bin=cfg.max_bin, groups=valid_groups)
    metric = selection.ipw_ndcg(valid_groups, valid_t["label"].to_numpy().astype(np.float64),
                                valid_t["weight"].to_numpy().astype(np.float64))
    n_train, n_groups, n_valid = train_t.num_rows, len(train_groups), valid_t.num_rows
    del train_t, valid_t  # the Datasets hold the only references: Arrow memory goes once they are constructed
    booster, valid_metric = fit(cfg, objective, dtrain, dvalid, metric)
    seconds = time.perf_counter() - t0
    prefix = run_prefix(day)
    bucket = settings.s3.models_bucket
    result = TrainResult(day.isoformat(), f"s3://{bucket}/{prefix}", objective, booster.best_iteration, valid_metric,
                         n_train, n_groups, n_valid, round(seconds, 2), round(load_s, 2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.txt"
        booster.save_model(str(path), num_iteration=booster.best_iteration)
        store.put(bucket, prefix + "model.txt", path.read_bytes(), content_type="text/plain")
    store.put_json(bucket, prefix + "feature_manifest.json",
                   features.manifest(settings.events.tenants, objective=objective))
    store.put_json(bucket, prefix + "train_metrics.json", {**asdict(result), "params": lgb_params(cfg, objective),
                                                            "dataset": f"s3://{settings.s3.lake_bucket}/"
                                                                       f"{lake.dataset_prefix(day)}"})
    log.info("trained %s: best iteration %s, valid %s", prefix, booster.best_iteration, valid_metric)
    return result


@dataclass
class RefitResult:
    day: str
    rounds: int
    rows: int
    groups: int
    seconds: float


def refit(settings: Settings, *, day: date, rounds: int, objective: str | None = None) -> tuple[str, RefitResult]:
    """The evaluated model's recipe on the WHOLE window, the validation and held-out days included, but never
    the exploration lists: they are where later candidates are compared with this model, and a model that
    had fit them would look better there than it is.

    Why: the model that goes live for D + 1 would otherwise never have trained on its two most recent
    days (D - 1 picked the rounds, D judged it). With no day left to early-stop on, it keeps the
    rounds the evaluated twin chose; the gate's judgement of the twin stands for it (bench/loop.py
    measures whether that trade pays on the simulator's ground truth).
    """
    import lightgbm as lgb

    cfg = settings.train
    objective = objective or cfg.objective
    t0 = time.perf_counter()
    store = ObjectStore.from_settings(settings)   # one client for the three splits
    table = pa.concat_tables([load_split(settings, day, "train", store=store),
                              load_split(settings, day, "valid", store=store),
                              load_split(settings, day, "holdout", explore=False, store=store)])
    if table.num_rows == 0:
        raise ValueError(f"training set {lake.dataset_prefix(day)} is empty: nothing to refit")
    sizes = group_sizes(table["request_id"])
    rows, groups = table.num_rows, len(sizes)
    data = to_lgb_dataset(table, objective, max_bin=cfg.max_bin, groups=sizes)
    del table
    booster = lgb.train(lgb_params(cfg, objective), data, num_boost_round=max(1, rounds))
    result = RefitResult(day.isoformat(), booster.current_iteration(), rows, groups,
                         round(time.perf_counter() - t0, 2))
    log.info("refit %s on the whole window: %s rounds, %s rows in %.1fs", day, result.rounds, rows, result.seconds)
    return booster.model_to_string(), result
