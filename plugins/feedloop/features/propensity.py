"""Position bias: how likely a user is to even look at position p of a list on a surface.

From exploration traffic (positions shuffled, so CTR by position is pure examination bias)
when there is enough of it; otherwise from a position-based click model fit by EM on all logs
(click = examined(position) x relevant(item)).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def from_exploration(rows: pa.Table, *, min_impressions: int) -> dict[str, dict[int, float]]:
    """rows: surface, position, impressions, clicks over explore=true impressions only."""
    curves: dict[str, dict[int, float]] = {}
    for surface in sorted(set(rows["surface"].to_pylist())):
        part = rows.filter(pa.compute.equal(rows["surface"], surface)).to_pydict()
        if sum(part["impressions"]) < min_impressions:
            continue
        ctr = {p: (c + 0.5) / (n + 1.0) for p, n, c in zip(part["position"], part["impressions"], part["clicks"])}
        top = ctr.get(1) or max(ctr.values())
        curves[surface] = {p: min(1.0, v / top) for p, v in sorted(ctr.items())}
    return curves


def from_click_model(rows: pa.Table, *, iterations: int = 2000, tol: float = 1e-7) -> dict[str, dict[int, float]]:
    """rows: surface, position, item_id, impressions, clicks over all impressions (regression-free EM).

    EM converges slowly when items stay near fixed positions, so it runs until the examination
    curve moves less than `tol` (or `iterations`)."""
    curves: dict[str, dict[int, float]] = {}
    for surface in sorted(set(rows["surface"].to_pylist())):
        part = rows.filter(pa.compute.equal(rows["surface"], surface))
        pos = np.asarray(part["position"].to_numpy(zero_copy_only=False), dtype=np.int64)
        items, item_idx = np.unique(np.asarray(part["item_id"].to_pylist(), dtype=object), return_inverse=True)
        n = np.asarray(part["impressions"].to_numpy(zero_copy_only=False), dtype=np.float64)
        c = np.asarray(part["clicks"].to_numpy(zero_copy_only=False), dtype=np.float64)
        positions, pos_idx = np.unique(pos, return_inverse=True)
        theta = np.full(len(positions), 0.5)
        gamma = np.full(len(items), 0.5)
        for _ in range(iterations):
            t, g = theta[pos_idx], gamma[item_idx]
            no_click = 1.0 - t * g
            seen_irrelevant = (n - c) * t * (1 - g) / no_click
            unseen_relevant = (n - c) * (1 - t) * g / no_click
            new_theta = np.bincount(pos_idx, c + seen_irrelevant, len(positions)) / np.bincount(pos_idx, n, len(positions))
            gamma = np.bincount(item_idx, c + unseen_relevant, len(items)) / np.bincount(item_idx, n, len(items))
            new_theta, gamma = np.clip(new_theta, 1e-4, 1.0), np.clip(gamma, 1e-4, 1 - 1e-4)
            converged = np.max(np.abs(new_theta - theta)) < tol
            theta = new_theta
            if converged:
                break
        top = theta[0]
        curves[surface] = {int(p): float(min(1.0, v / top)) for p, v in zip(positions, theta)}
    return curves


def weights(surface: np.ndarray, position: np.ndarray, clicked: np.ndarray, curves: dict[str, dict[int, float]],
            *, max_weight: float) -> np.ndarray:
    """Inverse-propensity weights for clicked rows (clipped); 1 for the rest and for unknown positions."""
    out = np.ones(len(surface), dtype=np.float32)
    for name, curve in curves.items():
        lookup = np.ones(max(curve) + 2, dtype=np.float32)   # positions beyond the curve: weight 1
        for p, v in curve.items():
            lookup[p] = min(max_weight, 1.0 / v)
        mask = (surface == name) & clicked
        out[mask] = lookup[np.clip(position[mask], 0, len(lookup) - 1)]
    return out
