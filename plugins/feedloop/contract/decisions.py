"""The typed gate-decision contract: one check of the promotion gate, as stored in gate.json and read back.

Why in contract: the gate (feedloop.promotion.gate) writes its checks and the alerts (feedloop.alerts)
read them back from gate.json to name what failed, so both import the same dataclass instead of the
alerts importing the promotion package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One check of the gate, passed or not, with every number that went into it."""

    kind: str            # parity | floor | comparison | comparable
    scope: str           # overall | <segment>, e.g. tenant_id=globex
    metric: str
    candidate: float | None
    limit: float | None  # floor / parity: the value the candidate had to reach; comparison: -tolerance
    passed: bool
    champion: float | None = None
    support: int | None = None  # judged lists (query groups) behind the figure
    note: str = ""
    diff: float | None = None   # comparison: candidate - champion on the same lists, and its interval
    low: float | None = None
    high: float | None = None
    verdict: str = ""           # comparison: better | worse | inconclusive
    estimator: str = ""
    confidence: float | None = None

    def line(self) -> str:
        """One line an operator can act on."""
        cand = _fmt(self.candidate)
        if self.kind == "comparison":
            evidence = (f"({self.estimator} debiased; diff {_fmt(self.diff, signed=True)}, {_interval(self)} over "
                        f"{self.support} lists")
            if self.verdict == "worse":
                return (f"{self.metric} in {self.scope} regressed: candidate {cand} vs champion {_fmt(self.champion)} "
                        f"{evidence}; allowed down to {_fmt(self.limit, signed=True)})")
            if self.verdict == "inconclusive":
                return (f"{self.metric} in {self.scope} is inconclusive: candidate {cand} vs champion "
                        f"{_fmt(self.champion)} {evidence} reaches both sides of {_fmt(self.limit, signed=True)}): "
                        f"too little support to tell; {self.note}")
            return (f"{self.metric} in {self.scope} holds up: candidate {cand} vs champion {_fmt(self.champion)} "
                    f"{evidence}, above {_fmt(self.limit, signed=True)})")
        if self.kind == "floor":
            return f"{self.metric} {self.scope} {cand} is below the floor {_fmt(self.limit)}"
        if self.kind == "comparable":
            return (f"{self.note}: no regression check is possible; if the new feature set is intended, "
                    "promote with promotion_mode=force and a force_reason after reading the report")
        return f"ONNX parity max |diff| {cand} exceeds {_fmt(self.limit)} ({self.note})"


def _interval(check: Check) -> str:
    level = f"{check.confidence * 100:g}% CI" if check.confidence else "CI"
    return f"{level} [{_fmt(check.low, signed=True)}, {_fmt(check.high, signed=True)}]"


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4g}"
