"""Drift bands for an hour from the same hour of the trailing days: median and MAD, not mean.

Why robust and per hour: real traffic is bursty. A mean over days that include one spike, or a
band that compares a quiet night hour with the day's average, warns on ordinary traffic; the
median and the median absolute deviation of the SAME hour ignore a few odd days, and volume is
judged on a log scale because hour volumes are heavy-tailed (lognormal-like).
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from feedloop.core.config import QualityThresholds
from feedloop.quality.suites import Unset

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data


def robust_band(values: list[float], *, k: float, min_rel: float) -> tuple[float, float, float]:
    """(low, high, median): median +- max(k * 1.4826 * MAD, min_rel * median)."""
    mid = median(values)
    mad = MAD_SCALE * median(abs(v - mid) for v in values)
    half = max(k * mad, min_rel * abs(mid))
    return max(0.0, mid - half), mid + half, mid


def log_band(values: list[float], *, k: float, min_rel: float) -> tuple[float, float, float]:
    """robust_band on log1p(values), mapped back: a band that widens with the spread of heavy tails."""
    logs = [math.log1p(v) for v in values]
    mid = median(logs)
    mad = MAD_SCALE * median(abs(v - mid) for v in logs)
    half = max(k * mad, math.log1p(min_rel))
    return max(0.0, math.expm1(mid - half)), math.expm1(mid + half), math.expm1(mid)


def volume_band(tenant: str | None, th: QualityThresholds, baseline: list[dict[str, Any]], min_days: int,
                hour: int) -> dict[str, Any]:
    """rows_min / rows_max for one tenant's rows in this hour, or Unset with the reason."""
    if len(baseline) < min_days:
        unset = Unset(f"baseline has {len(baseline)} validated day(s) of hour {hour:02d}, needs {min_days}")
        return {"rows_min": unset, "rows_max": unset}
    rows = [m["rows"].get(tenant or "", 0) for m in baseline]
    low, high, mid = log_band(rows, k=th.volume_mad_k, min_rel=th.volume_band)
    if mid < th.volume_min_rows:
        unset = Unset(f"baseline median {mid:.0f} rows < volume_min_rows {th.volume_min_rows}")
        return {"rows_min": unset, "rows_max": unset}
    return {"rows_min": int(low), "rows_max": math.ceil(high)}


def ctr_band(tenant: str | None, surface: str | None, th: QualityThresholds, baseline: list[dict[str, Any]],
             min_days: int, hour: int, current: dict[str, Any]) -> dict[str, Any]:
    """ctr_min / ctr_max for one tenant + surface in this hour, from the baseline days with enough impressions."""
    pair = f"{tenant}/{surface}"
    ctrs = [m["clicks"].get(pair, 0) / m["impressions"][pair] for m in baseline
            if m["impressions"].get(pair, 0) >= th.ctr_min_impressions]
    if len(ctrs) < min_days:
        why = (f"{len(ctrs)} baseline day(s) of hour {hour:02d} reach ctr_min_impressions {th.ctr_min_impressions}, "
               f"needs {min_days}")
    elif (now := current.get("impressions", {}).get(pair, 0)) < th.ctr_min_impressions:
        why = f"{now} impressions this hour < ctr_min_impressions {th.ctr_min_impressions}"
    else:
        low, high, _ = robust_band(ctrs, k=th.ctr_mad_k, min_rel=th.ctr_band)
        return {"ctr_min": round(low, 6), "ctr_max": round(min(high, 1.0), 6)}
    return {"ctr_min": Unset(why), "ctr_max": Unset(why)}


def ctr_ceiling(tenant: str | None, surface: str | None, th: QualityThresholds,
                current: dict[str, Any]) -> dict[str, Any]:
    """The ctr_not_zero check judges a tenant + surface only with enough impressions this hour."""
    now = current.get("impressions", {}).get(f"{tenant}/{surface}", 0)
    if now < th.ctr_min_impressions:
        return {"ctr_ceiling": Unset(f"{now} impressions this hour < ctr_min_impressions {th.ctr_min_impressions}")}
    return {"ctr_ceiling": 1.0}
