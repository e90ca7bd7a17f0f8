"""A retrain run's candidate: the model the train step left for one logical date, its workspace and its holdout.

s3://<models>/ranker/runs/<ds>/                          model.txt, feature_manifest.json, train_metrics.json
s3://<models>/ranker/runs/<ds>/candidates/<version>/     what each promotion step staged for that version
s3://<lake>/datasets/ranker/<ds>/split=holdout/          the rows it is evaluated on (D itself, never trained on)

The version id is "<ds>-<hash of model.txt, feature manifest and data lineage>", so re-running a day
with the same inputs yields the same version and a retrained model a new one; every step stages its
output under the version's folder and a re-run returns what is there.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import orjson

from feedloop.core import layout
from feedloop.core.config import Settings
from feedloop.core.errors import EvaluationError
from feedloop.core.storage import ObjectStore
from feedloop.promotion.registry import sha256

HOLDOUT_COLUMNS = ("request_id", "label", "label_binary", "item_popularity", "weight", "explore")
HOLDOUT_DATED = ("day",)  # read where every file has it: promotion.compare_days judges on the newest days
MODES = ("gate", "force", "dry-run")  # the retrain param promotion_mode (feedloop.airflow.params)
RUNS = f"{layout.RANKER_PREFIX}runs/"  # a candidate's workspace: RUNS<ds>/candidates/<version>/


@dataclass(frozen=True)
class Candidate:
    """The trained model of one logical date, as the train step left it."""

    ds: str
    settings: Settings
    model_text: str
    feature_manifest: dict[str, Any]
    train_metrics: dict[str, Any]
    lineage: bytes

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings)

    @property
    def run_key(self) -> str:
        return f"{RUNS}{self.ds}/"

    @property
    def dataset_key(self) -> str:
        return f"{layout.DATASETS_PREFIX}{self.ds}/"

    @cached_property
    def version(self) -> str:
        digest = sha256(self.model_text.encode() + b"\0" + _canonical(self.feature_manifest) + b"\0" + self.lineage)
        return f"{self.ds}-{digest[:10]}"

    def stage_key(self, name: str) -> str:
        return candidate_key(self.ds, self.version, name)

    def stage_uri(self, name: str) -> str:
        return self.store.uri(self.settings.s3.models_bucket, self.stage_key(name))

    def staged(self, name: str) -> Any:
        return self.store.get_json(self.settings.s3.models_bucket, self.stage_key(name))

    def stage(self, name: str, obj: Any) -> str:
        self.store.put_json(self.settings.s3.models_bucket, self.stage_key(name), obj)
        return self.stage_uri(name)


def candidate_key(ds: str, version: str, name: str = "") -> str:
    """The key of `name` staged for `version` by the run of `ds` (models bucket)."""
    return f"{RUNS}{ds}/candidates/{version}/{name}"


def load_candidate(*, ds: str, settings: Settings) -> Candidate:
    store = ObjectStore.from_settings(settings)
    models, lake = settings.s3.models_bucket, settings.s3.lake_bucket
    run = f"{RUNS}{ds}/"
    names = ("model.txt", "feature_manifest.json", "train_metrics.json")
    found = {name: store.get(models, run + name) for name in names}
    missing = [store.uri(models, run + n) for n, v in found.items() if v is None]
    if missing:
        raise EvaluationError(f"no trained model for {ds}: missing {', '.join(missing)} (run the train step first)")
    lineage = store.get(lake, f"{layout.DATASETS_PREFIX}{ds}/lineage.json")
    return Candidate(ds=ds, settings=settings, model_text=found["model.txt"].body.decode(),
                     feature_manifest=orjson.loads(found["feature_manifest.json"].body),
                     train_metrics=orjson.loads(found["train_metrics.json"].body),
                     lineage=lineage.body if lineage else b"{}")


def staged_refit(cand: Candidate) -> Candidate | None:
    """The staged refit of an evaluated candidate (steps.refit_candidate), if one passed ONNX parity."""
    record = cand.staged("refit.json")
    if record is None or not record["passed"]:
        return None
    bucket = cand.settings.s3.models_bucket
    key = candidate_key(cand.ds, record["version"])
    model_text = cand.store.get(bucket, key + "model.txt").body.decode()
    return Candidate(ds=cand.ds, settings=cand.settings, model_text=model_text, feature_manifest=cand.feature_manifest,
                     train_metrics=cand.store.get_json(bucket, key + "train_metrics.json"), lineage=cand.lineage)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"promotion mode must be one of {', '.join(MODES)}, got {mode!r}")


def holdout(store: ObjectStore, bucket: str, dataset_key: str, features: list[str],
            segments: tuple[str, ...] = (), optional: list[str] | None = None) -> dict[str, np.ndarray]:
    """The holdout's columns: the candidate's features and `segments` must be there; `optional` ones
    (the champion's features) and the day are read where every file has them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = dataset_key + "split=holdout/"
    keys = sorted(k for k in store.list_keys(bucket, prefix) if k.endswith(".parquet"))
    if not keys:
        raise EvaluationError(f"no holdout rows under {store.uri(bucket, prefix)}")
    required = list(dict.fromkeys([*HOLDOUT_COLUMNS, *segments, *features]))
    tables = []
    for key in keys:
        table = pq.read_table(io.BytesIO(store.get(bucket, key).body))
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise EvaluationError(f"{store.uri(bucket, key)} lacks column(s) {', '.join(missing)}")
        tables.append(table)
    everywhere = set.intersection(*(set(t.column_names) for t in tables))
    wanted = required + [c for c in dict.fromkeys([*(optional or []), *HOLDOUT_DATED])
                         if c in everywhere and c not in required]
    table = pa.concat_tables([t.select(wanted) for t in tables])
    return {name: table.column(name).to_numpy() for name in wanted}


def feature_names(manifest: dict[str, Any]) -> list[str]:
    """The holdout columns holding each feature, in model order (a manifest may name them apart)."""
    return [f.get("column", f["name"]) for f in manifest["features"]]


def feature_matrix(columns: dict[str, np.ndarray], manifest: dict[str, Any], *, what: str) -> np.ndarray:
    names = feature_names(manifest)
    missing = [n for n in names if n not in columns]
    if missing:
        raise EvaluationError(f"{what} needs feature column(s) the holdout lacks: {', '.join(missing)}")
    return np.column_stack([columns[n].astype(np.float32) for n in names]) if names else np.empty((0, 0), np.float32)


def _canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
