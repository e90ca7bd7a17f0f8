"""LightGBM text model -> ONNX (onnxmltools), and the parity check that decides whether the export is usable.

Why a parity check on real holdout rows: the serving pods score with onnxruntime, so what was
evaluated (LightGBM) must be what is served. Categorical splits, NaNs and unseen categories are
where converters diverge; the holdout sample contains all three in practice.

Why thresholds are rounded down: LightGBM splits at doubles, ONNX trees hold float32, and onnxmltools
rounds each threshold to the nearest float32. Where that is above the double, a feature equal to the
rounded value goes left in ONNX and right in LightGBM (about a third of a model's thresholds round up;
one holdout row in 15,384 then scored 0.061 apart and failed a candidate's parity in bench/loop.py).
The largest float32 at or below the threshold splits every float32 input (the pods' and the training
matrix's type) exactly as the double does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

INPUT_NAME = "input"
TARGET_OPSET = 15  # the highest onnxmltools 1.16 converts LightGBM to
GRAPH_NAME = "feedloop_ranker"


@dataclass(frozen=True)
class Parity:
    """max_scaled_diff is what passes or fails (see scaled_diff); max_abs_diff is shown beside it.
    worst: the checked rows' indices, the largest scaled differences first (what a pod checks again)."""

    max_abs_diff: float
    rows: int
    threshold: float
    max_scaled_diff: float = float("inf")
    worst: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_scaled_diff)) and self.max_scaled_diff <= self.threshold

    def to_dict(self) -> dict:
        """JSON-safe: an export that did not run has both differences None (never passes)."""
        finite = bool(np.isfinite(self.max_abs_diff)) and bool(np.isfinite(self.max_scaled_diff))
        return {**asdict(self), "max_abs_diff": self.max_abs_diff if finite else None,
                "max_scaled_diff": self.max_scaled_diff if finite else None, "worst": list(self.worst),
                "passed": self.passed}


def scaled_diff(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|onnx - lightgbm| per row, relative to the score where it is above 1 in size.

    Why: ONNX trees add their leaves in float32, which keeps about 7 significant digits. A LambdaRank score
    near 10 summed over 300 trees lands ~2e-5 from LightGBM's double (the closed loop, 2026-12-07): an
    absolute 1e-5 then refuses a sound model, or passes it on one set of rows and fails it on another.
    Scores in [-1, 1] (binary probabilities) are compared absolutely; a wrong model misses by 1e-2 or more."""
    expected = np.asarray(expected, dtype=np.float64)
    return np.abs(np.asarray(got, dtype=np.float64) - expected) / np.maximum(1.0, np.abs(expected))


def to_onnx(*, model_text: str, n_features: int) -> bytes:
    """The serialised ONNX model of a LightGBM text model (lambdarank: raw scores; binary: probabilities)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = _booster_for_onnx(model_text)
    if booster.num_feature() != n_features:
        raise ValueError(f"model has {booster.num_feature()} features, the manifest names {n_features}")
    model = onnxmltools.convert_lightgbm(booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                                         zipmap=False, target_opset=TARGET_OPSET)
    # onnxmltools names each conversion with a random uuid and lists the opsets in no fixed order: pin both,
    # so the same model.txt always gives the same bytes (and sha256), whichever worker converted it
    model.graph.name = GRAPH_NAME
    opsets = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model.SerializeToString()


def _booster_for_onnx(model_text: str) -> Any:
    """The booster of model_text, whose dump (what onnxmltools converts) has float32 thresholds rounded down.

    `is_mock` makes onnxmltools convert from dump_model() instead of parsing the model's JSON itself.
    """
    import lightgbm as lgb

    class Float32Thresholds(lgb.Booster):
        is_mock = True

        def dump_model(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            dumped = super().dump_model(*args, **kwargs)
            for tree in dumped["tree_info"]:
                _round_numeric_splits(tree["tree_structure"])
            return dumped

    return Float32Thresholds(model_str=model_text)


def _round_numeric_splits(node: dict[str, Any]) -> None:
    """Every numeric split under node gets the largest float32 <= its threshold (categorical ones are sets)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if "split_index" not in current:
            continue
        if current["decision_type"] == "<=":
            current["threshold"] = _round_down(float(current["threshold"]))
        stack += [current["left_child"], current["right_child"]]


def _round_down(threshold: float) -> float:
    """The largest float32 <= threshold (as a double); beyond float32's range, its largest finite value."""
    with np.errstate(over="ignore"):
        nearest = np.float32(threshold)
    return float(np.nextafter(nearest, np.float32(-np.inf)) if float(nearest) > threshold else nearest)


def onnx_scores(*, onnx_bytes: bytes, matrix: np.ndarray) -> np.ndarray:
    """One score per row, as LightGBM's predict() gives it (the positive-class probability for binary)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the binary model's `label` output warns about its declared shape
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    return score_output(session.run(None, {INPUT_NAME: np.ascontiguousarray(matrix, dtype=np.float32)})[-1])


def score_output(out: np.ndarray) -> np.ndarray:
    """The converted model's last output as one score per row (binary: the positive-class column)."""
    return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)


def check_parity(*, model_text: str, onnx_bytes: bytes, matrix: np.ndarray, threshold: float,
                 worst: int = 8) -> Parity:
    """onnxruntime against lightgbm over the rows of matrix (scaled_diff); a crash or NaN counts as a failure."""
    import lightgbm as lgb

    expected = lgb.Booster(model_str=model_text).predict(matrix)
    rows = int(matrix.shape[0])
    try:
        got = onnx_scores(onnx_bytes=onnx_bytes, matrix=matrix).astype(np.float64)
    except Exception:  # noqa: BLE001 - an ONNX model that does not run has no parity
        return Parity(max_abs_diff=float("inf"), rows=rows, threshold=threshold)
    if not rows:
        return Parity(max_abs_diff=0.0, rows=0, threshold=threshold, max_scaled_diff=0.0)
    scaled = np.nan_to_num(scaled_diff(got, expected), nan=np.inf)
    order = np.argsort(-scaled, kind="stable")[:worst]
    return Parity(max_abs_diff=float(np.nan_to_num(np.max(np.abs(got - expected)), nan=np.inf)), rows=rows,
                  threshold=threshold, max_scaled_diff=float(scaled[order[0]]),
                  worst=tuple(int(i) for i in order))
