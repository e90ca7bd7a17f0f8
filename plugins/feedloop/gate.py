"""The promotion gate: absolute floors AND no regression against the champion, overall and per segment.

Why pure and explicit (TFX Evaluator's "blessing"): the decision must be reproducible from the
numbers in metrics.json, and an operator must see every number behind it. Every check is kept,
passed or not, so the report can show the whole table and the alert can name what failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Thresholds:
    floors: Mapping[str, float]                    # candidate overall metric >= floor, e.g. {"auc": 0.6}
    compare: tuple[str, ...] = ("auc", "ndcg@10")  # metrics that must not regress against the champion
    tolerance: float = 0.005                        # overall: candidate >= champion - tolerance
    segment_tolerance: float = 0.02                 # per segment (smaller samples, more noise)
    min_support: int = 50                           # segments with fewer judged query groups are not judged
    parity_max_abs_diff: float = 1e-5

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "floors": dict(self.floors), "compare": list(self.compare)}


@dataclass(frozen=True)
class Check:
    kind: str            # parity | floor | regression | comparable
    scope: str           # overall | <segment>, e.g. tenant_id=globex
    metric: str
    candidate: float | None
    limit: float | None  # the value the candidate had to reach
    passed: bool
    champion: float | None = None
    support: int | None = None
    note: str = ""

    def line(self) -> str:
        """One line an operator can act on."""
        cand = _fmt(self.candidate)
        if self.kind == "regression":
            return (f"{self.metric} in {self.scope} regressed: candidate {cand} vs champion {_fmt(self.champion)} "
                    f"(delta {_fmt(_delta(self), signed=True)}, allowed down to {_fmt(self.limit)}; "
                    f"{self.support} query groups)")
        if self.kind == "floor":
            return f"{self.metric} {self.scope} {cand} is below the floor {_fmt(self.limit)}"
        if self.kind == "comparable":
            return (f"{self.note}: no regression check is possible; if the new feature set is intended, "
                    "promote with promotion_mode=force and a force_reason after reading the report")
        return f"ONNX parity max |diff| {cand} exceeds {_fmt(self.limit)} ({self.note})"


@dataclass(frozen=True)
class GateDecision:
    promotable: bool
    candidate: str | None
    champion: str | None
    thresholds: dict[str, Any]
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def summary(self) -> str:
        if self.promotable:
            against = f"champion {self.champion}" if self.champion else "the floors (first model)"
            return f"candidate {self.candidate} passes the gate against {against} ({len(self.checks)} checks)"
        return (f"candidate {self.candidate} blocked against champion {self.champion or '(none)'}: "
                + "; ".join(c.line() for c in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {"promotable": self.promotable, "candidate": self.candidate, "champion": self.champion,
                "summary": self.summary(), "thresholds": self.thresholds,
                "checks": [asdict(c) for c in self.checks]}


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, thresholds: Thresholds) -> GateDecision:
    """Gate one candidate.

    candidate: {"version", "overall": {metric: value, "groups": n}, "segments": {scope: {...}},
    "parity": {"max_abs_diff", "rows"}}; champion: the same shape evaluated on the same rows, or None
    for the first model (floors and parity only). A missing parity figure never passes, nor does a
    champion that could not be scored on these rows ({"unscorable": why}: its feature set differs).
    """
    checks = [_parity(candidate.get("parity"), thresholds.parity_max_abs_diff)]
    overall = candidate["overall"]
    for metric, floor in sorted(thresholds.floors.items()):
        value = overall.get(metric)
        checks.append(Check("floor", "overall", metric, value, floor, value is not None and value >= floor,
                            support=overall.get("groups")))
    if champion is not None and champion.get("unscorable"):
        checks.append(Check("comparable", "overall", "champion", None, None, False, note=champion["unscorable"]))
    elif champion is not None:
        checks += _regressions("overall", overall, champion["overall"], thresholds, thresholds.tolerance)
        for scope in sorted(candidate.get("segments", {})):
            cand_seg = candidate["segments"][scope]
            champ_seg = champion.get("segments", {}).get(scope)
            if champ_seg is None or (cand_seg.get("groups") or 0) < thresholds.min_support:
                continue
            checks += _regressions(scope, cand_seg, champ_seg, thresholds, thresholds.segment_tolerance)
    return GateDecision(promotable=all(c.passed for c in checks), candidate=candidate.get("version"),
                        champion=None if champion is None else champion.get("version"),
                        thresholds=thresholds.to_dict(), checks=tuple(checks))


def _parity(parity: Mapping[str, Any] | None, limit: float) -> Check:
    diff = None if parity is None else parity.get("max_abs_diff")
    rows = 0 if parity is None else parity.get("rows", 0)
    passed = diff is not None and rows > 0 and diff <= limit
    note = f"{rows} holdout rows" if diff is not None else "no parity figure: the export failed or was not checked"
    return Check("parity", "overall", "max_abs_diff", diff, limit, passed, note=note)


def _regressions(scope: str, cand: Mapping[str, Any], champ: Mapping[str, Any], thresholds: Thresholds,
                 tolerance: float) -> list[Check]:
    out = []
    for metric in thresholds.compare:
        c, h = cand.get(metric), champ.get(metric)
        if h is None:  # undefined for the champion too (e.g. AUC with one class): nothing to compare
            continue
        limit = h - tolerance
        out.append(Check("regression", scope, metric, c, limit, c is not None and c >= limit, champion=h,
                         support=cand.get("groups")))
    return out


def _delta(check: Check) -> float | None:
    if check.candidate is None or check.champion is None:
        return None
    return check.candidate - check.champion


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4g}"
