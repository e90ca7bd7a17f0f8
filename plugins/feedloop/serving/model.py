"""Load one registered version for serving, verified end to end before it may take traffic.

Why so strict: the complaints about model servers are a half-written or wrong artifact going
live and nobody being able to say what is serving. A version is used only after: its files match
the sha256 in the manifest (and model.onnx the one in the pointer), the ONNX graph loads and has
the manifest's signature, the feature snapshot parses, and a warm-up reproduces the scores
LightGBM gave for the registered sample rows. Every refusal has a reason label and a sentence.

Why the pointer cannot send a pod anywhere: a pointer entry must name a folder of the pod's own
models bucket and prefix (from its config), by a name of the registry's version pattern, and the
files a pod reads are named by code (model.onnx, the feature definitions' snapshot files), never
by a manifest; so no outside string becomes an S3 key elsewhere or a path out of the local cache.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feedloop.training import export
from feedloop.features import definitions as features
from feedloop.promotion.pointer_plan import VERSION_PATTERN
from feedloop.serving.snapshot import FILES as SNAPSHOT_FILES
from feedloop.serving.snapshot import Snapshot, SnapshotError

MANIFEST = "manifest.json"
MODEL = "model.onnx"
FEATURES_DIR = "features/"
ARTIFACTS = (MODEL, *(FEATURES_DIR + name for name in SNAPSHOT_FILES))  # every file a pod downloads
WARMUP_ROWS = 512
REASONS = ("bad_pointer", "missing_artifact", "bad_manifest", "truncated", "sha256_mismatch", "invalid_onnx",
           "signature_mismatch", "bad_snapshot", "nan_scores", "sample_mismatch", "s3_error", "unexpected_error",
           "bad_index")  # bad_index: a retriever's ANN index that does not load or does not fit its towers
# Folder names a pointer may use: version ids, and feature snapshot ids ("<as_of>-<hex>", the same shape).
FOLDER_NAME = re.compile(VERSION_PATTERN)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SwapRefused(RuntimeError):
    """A version (or pointer) that must not serve; `reason` is the metric label, the message says why."""

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Root:
    """The one bucket and key prefix a pointer's folders may be in (the pod's config, not the pointer)."""

    bucket: str
    prefix: str                    # e.g. "ranker/versions/", ending in "/"

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}/"

    def key(self, name: str, file: str) -> str:
        return f"{self.prefix}{name}/{file}"


@dataclass(frozen=True)
class Target:
    """One model the pointer asks for: a version, its folder and the sha256 of its model.onnx."""

    version: str
    uri: str
    sha256: str

    @classmethod
    def parse(cls, obj: Any, where: str, root: Root) -> Target:
        fields = pointer_entry(obj, where, ("version", "uri", "sha256"), folder_of="version", root=root)
        if not SHA256.fullmatch(fields["sha256"]):
            raise SwapRefused("bad_pointer", f"{where}: sha256 {fields['sha256'][:80]!r} is not 64 lowercase hex "
                                             "digits (the sha256 of the version's model.onnx)")
        return cls(fields["version"], fields["uri"], fields["sha256"])

    @property
    def bucket(self) -> str:
        return folder_bucket(self.uri)

    def key(self, name: str) -> str:
        return folder_key(self.uri, name)


def pointer_entry(obj: Any, where: str, names: Sequence[str], *, folder_of: str, root: Root) -> dict[str, str]:
    """The non-empty string fields `names` of one pointer entry, whose `uri` is the folder `root` has for its
    `folder_of` (a name of the registry's version pattern): anything else is refused as bad_pointer."""
    if not isinstance(obj, dict):
        raise SwapRefused("bad_pointer", f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in names if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        raise SwapRefused("bad_pointer", f"{where}: missing or empty field(s) {', '.join(missing)}")
    uri, name = obj["uri"], obj[folder_of]
    if not FOLDER_NAME.fullmatch(name):
        raise SwapRefused("bad_pointer", f"{where}: {folder_of} {name[:80]!r} does not match {VERSION_PATTERN} "
                                         "(the registry's names); the pod keeps what it serves")
    if uri.rstrip("/") + "/" != root.uri(name):
        raise SwapRefused("bad_pointer", f"{where}: uri {uri[:200]!r} is not {root.uri(name)}, the folder of "
                                         f"{folder_of} {name} in this pod's bucket and prefix (serving pods read "
                                         "only s3://<s3.models_bucket>/" + root.prefix + ")")
    return {k: obj[k] for k in names}


def folder_bucket(uri: str) -> str:
    return uri[len("s3://"):].split("/", 1)[0]


def folder_key(uri: str, name: str) -> str:
    return uri[len("s3://"):].split("/", 1)[1].rstrip("/") + "/" + name


@dataclass(frozen=True)
class Pointer:
    """ranker/live.json as a pod reads it."""

    live: Target
    canary: Target | None
    canary_percent: float
    seq: int
    etag: str

    @classmethod
    def parse(cls, body: bytes, etag: str, root: Root) -> Pointer:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise SwapRefused("bad_pointer", f"live.json is not valid JSON ({exc}); the pod keeps its model") from None
        if not isinstance(obj, dict):
            raise SwapRefused("bad_pointer", "live.json is not a JSON object; the pod keeps its model")
        live = Target.parse(obj, "live.json", root)
        canary, percent = None, 0.0
        if obj.get("canary") is not None:
            canary = Target.parse(obj["canary"], "live.json canary", root)
            percent = obj["canary"].get("percent")
            if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
                raise SwapRefused("bad_pointer", f"live.json canary: percent {percent!r} is not in (0, 100]")
        seq = obj.get("seq", 0)
        return cls(live, canary, float(percent), seq if isinstance(seq, int) and not isinstance(seq, bool) else 0, etag)


@dataclass(frozen=True)
class SnapshotRef:
    """Which feature snapshot a model scores with: its own registered features/ or a published one."""

    id: str
    as_of: str | None              # the day its counts end before (None: not known)
    source: str                    # "registered" | "published"
    uri: str

    def age_seconds(self, now: float) -> float | None:
        """Seconds since the start of as_of: how far the counts lag the clock."""
        if self.as_of is None:
            return None
        start = datetime.combine(date.fromisoformat(self.as_of), datetime.min.time(), tzinfo=timezone.utc)
        return max(0.0, now - start.timestamp())

    def describe(self, now: float) -> dict[str, Any]:
        age = self.age_seconds(now)
        return {"id": self.id, "as_of": self.as_of, "source": self.source, "uri": self.uri,
                "age_seconds": None if age is None else round(age, 1)}


@dataclass
class LoadedModel:
    """A verified, warmed-up version: the ONNX session plus the feature snapshot it scores with and its manifest."""

    target: Target
    manifest: dict[str, Any]
    session: Any
    snapshot: Snapshot
    categories: dict[str, list[str]]
    source: str                    # "s3" or "cache" (the last-known-good local copy)
    snapshot_ref: SnapshotRef
    definition_version: str        # features.definition_version of its feature_manifest
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @property
    def version(self) -> str:
        return self.target.version

    @property
    def feature_names(self) -> list[str]:
        """The features the model was trained on, in its order: what `features.derive` computes for it."""
        return feature_names(self.manifest)

    def with_snapshot(self, snapshot: Snapshot, ref: SnapshotRef) -> LoadedModel:
        """The same session scoring with another snapshot: a new object, so a request keeps the one it read."""
        return replace(self, snapshot=snapshot, snapshot_ref=ref)

    def score(self, matrix: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {export.INPUT_NAME: matrix})[-1]
        return export.score_output(out)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "uri": self.target.uri, "sha256": self.target.sha256,
                "loaded_at": _iso(self.loaded_at), "load_seconds": round(self.load_seconds, 3), "source": self.source,
                "logical_date": self.manifest.get("logical_date"), "snapshot": self.snapshot.sizes(),
                "features": self.snapshot_ref.describe(time.time())}


class _Artifact(BaseModel):
    model_config = ConfigDict(strict=True)
    sha256: str = Field(pattern=SHA256.pattern)
    bytes: int = Field(ge=0)


class _Feature(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    kind: str
    categories: list[str] | None = None


class _FeatureManifest(BaseModel):
    model_config = ConfigDict(strict=True)
    features: list[_Feature] = Field(min_length=1)


class _Sample(BaseModel):
    model_config = ConfigDict(strict=True)
    rows: list[list[float | None]]
    scores: list[float]


class _Manifest(BaseModel):
    """The part of manifest.json a pod relies on (other fields are the registry's business)."""

    model_config = ConfigDict(strict=True)
    version: str
    artifacts: dict[str, _Artifact]
    feature_manifest: _FeatureManifest
    sample: _Sample
    logical_date: str | None = None

    @model_validator(mode="after")
    def _sample_fits(self) -> _Manifest:
        width = len(self.feature_manifest.features)
        if any(len(row) != width for row in self.sample.rows):
            raise ValueError(f"sample.rows must each hold {width} values (one per feature_manifest feature)")
        if len(self.sample.rows) != len(self.sample.scores):
            raise ValueError(f"sample has {len(self.sample.rows)} rows but {len(self.sample.scores)} scores")
        return self


def parse_manifest(target: Target, body: bytes) -> dict[str, Any]:
    """manifest.json as a dict whose every field a pod reads has the right type, else SwapRefused naming the field."""
    try:
        manifest = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} is not valid JSON ({exc})") from None
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(str(p) for p in e['loc']) or '(the whole manifest)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} is malformed ({problems}); a version is "
                                          "immutable: register a fixed one under a new version id") from None
    if manifest["version"] != target.version:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} describes {manifest['version'][:80]!r}, "
                                          f"not {target.version}")
    listed = manifest["artifacts"].get(MODEL)
    if listed is None:
        raise SwapRefused("bad_manifest", f"{target.uri}{MANIFEST} lists no {MODEL}")
    if listed["sha256"] != target.sha256:
        raise SwapRefused("sha256_mismatch", f"{target.version}: the pointer says model.onnx has sha256 "
                                             f"{target.sha256[:12]}..., the manifest {listed['sha256'][:12]}...")
    return manifest


def verify_file(target: Target, manifest: Mapping[str, Any], name: str, body: bytes) -> None:
    """Size first (a truncated download), then sha256 (wrong bytes)."""
    expected = manifest["artifacts"].get(name)
    if expected is None:
        raise SwapRefused("bad_manifest", f"{target.version}: the manifest lists no {name}")
    if len(body) != expected["bytes"]:
        raise SwapRefused("truncated", f"{target.uri}{name} has {len(body)} bytes, the manifest says "
                                       f"{expected['bytes']}: truncated or partly written")
    digest = hashlib.sha256(body).hexdigest()
    if digest != expected["sha256"]:
        raise SwapRefused("sha256_mismatch", f"{target.uri}{name} has sha256 {digest[:12]}..., the manifest says "
                                             f"{expected['sha256'][:12]}...: the bytes are not the registered ones")


def build(target: Target, manifest: dict[str, Any], files: Mapping[str, bytes], *, onnx_threads: int,
          sample_max_abs_diff: float, source: str) -> LoadedModel:
    """Session, signature check, snapshot, warm-up and sample check: a LoadedModel or SwapRefused."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    check_feature_contract(target, manifest)
    for name in ARTIFACTS:
        verify_file(target, manifest, name, files[name])
    options = ort.SessionOptions()
    options.intra_op_num_threads = onnx_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(files[MODEL], sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for a bad graph
        raise SwapRefused("invalid_onnx",
                          f"{target.uri}{MODEL} is not a loadable ONNX model ({first_line(exc)})") from None
    n_features = len(manifest["feature_manifest"]["features"])
    _check_signature(target, session, n_features)
    try:
        snapshot = Snapshot.from_parquet({n[len(FEATURES_DIR):]: b for n, b in files.items()
                                          if n.startswith(FEATURES_DIR)})
    except (SnapshotError, OSError, ValueError) as exc:
        raise SwapRefused("bad_snapshot", f"{target.version}: {exc}") from None
    categories = {f["name"]: f["categories"] for f in manifest["feature_manifest"]["features"] if "categories" in f}
    model = LoadedModel(target, manifest, session, snapshot, categories, source, registered_snapshot(target, manifest),
                        features.definition_version(manifest["feature_manifest"]))
    _warm_up(model, n_features, sample_max_abs_diff)
    model.load_seconds = time.perf_counter() - t0
    return model


def registered_snapshot(target: Target, manifest: Mapping[str, Any]) -> SnapshotRef:
    """The version's own features/: counts as of the day after its logical date (the dataset's window end)."""
    try:
        as_of = (date.fromisoformat(manifest.get("logical_date")) + timedelta(days=1)).isoformat()
    except (TypeError, ValueError):  # no or no ISO logical date: any published snapshot counts as newer
        as_of = None
    return SnapshotRef(f"{target.version}/features", as_of, "registered", target.uri + FEATURES_DIR)


def feature_names(manifest: Mapping[str, Any]) -> list[str]:
    return [f["name"] for f in manifest["feature_manifest"]["features"]]


def check_feature_contract(target: Target, manifest: Mapping[str, Any]) -> None:
    """This pod computes features.FEATURES; a version trained on a feature it does not know cannot be served by it.
    One trained on fewer (registered before a feature was added) is served the columns it was trained on."""
    unknown = [n for n in feature_names(manifest) if n not in features.BY_NAME]
    if unknown:
        raise SwapRefused("signature_mismatch", f"{target.version} was trained on features {unknown} this pod does not "
                                                f"compute (it computes {list(features.FEATURE_NAMES)}): deploy the "
                                                "matching feedloop version")


def _check_signature(target: Target, session, n_features: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if len(inputs) != 1 or inputs[0].name != export.INPUT_NAME:
        problems.append(f"inputs {[i.name for i in inputs]} (expected one named {export.INPUT_NAME!r})")
    elif inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 2 or inputs[0].shape[1] != n_features:
        problems.append(f"input {inputs[0].type} {inputs[0].shape} (expected tensor(float) [N, {n_features}])")
    if not outputs:
        problems.append("no outputs")
    if problems:
        raise SwapRefused("signature_mismatch",
                          f"{target.uri}{MODEL} does not match its manifest: {'; '.join(problems)}")


def _warm_up(model: LoadedModel, n_features: int, tolerance: float) -> None:
    sample = model.manifest["sample"]
    rows = np.array([[np.nan if v is None else v for v in row] for row in sample["rows"]], dtype=np.float32)
    rows = rows.reshape(-1, n_features)
    expected = np.asarray(sample["scores"], dtype=np.float64)
    try:
        got = model.score(rows).astype(np.float64)
        warm = model.score(np.ascontiguousarray(np.resize(rows, (WARMUP_ROWS, n_features)), dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - a graph that loads but cannot run
        raise SwapRefused("invalid_onnx", f"{model.version}: the warm-up batch failed ({first_line(exc)})") from None
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(warm))):
        raise SwapRefused("nan_scores", f"{model.version}: the warm-up batch scored NaN or infinity")
    if got.shape != expected.shape:
        raise SwapRefused("sample_mismatch",
                          f"{model.version}: {got.shape[0]} sample scores, {expected.shape[0]} registered")
    diff = float(np.max(export.scaled_diff(got, expected))) if len(got) else 0.0
    if not diff <= tolerance:
        raise SwapRefused("sample_mismatch", f"{model.version}: scores the registered sample rows {diff:.3g} away from "
                                             f"LightGBM's, relative to scores above 1 (allowed {tolerance:g})")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
