"""The typed contracts between the promotion stages: what the evaluation, the gate, the approval, registration
and the flip hand on, and the gate's checks as stored in gate.json.

Why in contract: training produces the metrics, promotion the evaluation, gate, approval, registration and flip
results, the Airflow task bodies hand them on as XComs and the alerts read the checks back from gate.json; each
reads the others' results as attributes of these dataclasses, and none imports the promotion package for it.
to_dict / from_dict give the exact dicts the DAG runs, the UI, the tests and the stored JSON have always had.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Self


class Record:
    """A contract stored or handed on as a plain dict of its fields."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Self:
        return cls(**record)

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
    verdict: str = ""           # comparison: better | not worse | no gain | worse | inconclusive
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
            if self.verdict == "no gain":
                return (f"{self.metric} in {self.scope} shows no gain: candidate {cand} vs champion "
                        f"{_fmt(self.champion)} {evidence}): {self.note}")
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


@dataclass(frozen=True)
class Comparison:
    """The headline comparison other code reads (the demo table, alerts, the approval request): never parse text."""

    metric: str
    estimator: str
    candidate: float | None
    champion: float | None
    diff: float | None
    low: float | None
    high: float | None
    lists: int
    verdict: str  # better | not worse | no gain | worse | inconclusive | no champion | not comparable


@dataclass(frozen=True)
class GateDecision:
    """promotion.gate.decide's verdict with every check behind it; to_dict() is gate.json."""

    promotable: bool
    candidate: str | None
    champion: str | None
    thresholds: dict[str, Any]
    checks: tuple[Check, ...] = field(default_factory=tuple)
    comparison: Comparison | None = None
    asks_approval: bool = False  # promotable only through the human approval step (inconclusive = approve)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def summary(self) -> str:
        if self.promotable:
            against = f"champion {self.champion}" if self.champion else "the floors (first model)"
            undecided = [c for c in self.checks if c.kind == "comparison" and c.scope == "overall"
                         and c.verdict == "inconclusive"]
            return (f"candidate {self.candidate} passes the gate against {against} ({len(self.checks)} checks)"
                    + "".join(f"; {c.line()}" for c in undecided))
        return (f"candidate {self.candidate} blocked against champion {self.champion or '(none)'}: "
                + "; ".join(c.line() for c in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {"promotable": self.promotable, "candidate": self.candidate, "champion": self.champion,
                "summary": self.summary(), "thresholds": self.thresholds,
                "comparison": None if self.comparison is None else asdict(self.comparison),
                "asks_approval": self.asks_approval, "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> GateDecision:
        """A gate.json read back (its summary is derived from the checks again)."""
        comparison = record.get("comparison")
        return cls(promotable=record["promotable"], candidate=record.get("candidate"), champion=record.get("champion"),
                   thresholds=dict(record.get("thresholds") or {}),
                   checks=tuple(Check(**c) for c in record.get("checks", [])),
                   comparison=None if comparison is None else Comparison(**comparison),
                   asks_approval=bool(record.get("asks_approval")))


@dataclass(frozen=True)
class ScorerMetrics:
    """One scorer's plain ranking metrics on the holdout (training.evaluate.evaluate)."""

    overall: dict[str, Any]              # every metric of training.evaluate.METRICS, and rows, lists, groups
    segments: dict[str, dict[str, Any]]  # "tenant_id=acme": the same on that segment's rows

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "segments": self.segments}


@dataclass(frozen=True)
class CounterfactualEstimates:
    """training.counterfactual.evaluate: per scorer {"explore": block, "debiased": block}, and the paired
    difference of two scorers on the same lists and resamples ({"of", "explore", "debiased"}; None unless asked)."""

    scorers: dict[str, dict[str, Any]]
    paired: dict[str, Any] | None


@dataclass(frozen=True)
class Evaluation(Record):
    """evaluation.json (and metrics.json, with the parity figure): the candidate, its champion and the popularity
    baseline scored on the same holdout rows.

    A scorer's block is ScorerMetrics plus the CounterfactualEstimates blocks (explore, debiased); the champion's
    starts with its version, or is {"version", "unscorable": why, "overall": {}, "segments": {}} when the holdout
    lacks its features (None: the first model).
    """

    version: str
    logical_date: str
    holdout: dict[str, Any]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    live: str | None                  # the version live when it was evaluated: the flip's compare-and-swap expects it
    popularity: dict[str, Any]
    feature_importance: dict[str, float]
    calibration: dict[str, list[float]]
    train: dict[str, Any]
    paired: dict[str, Any] | None      # candidate - champion on the same lists, with the bootstrap's settings
    estimates: dict[str, str]          # what each kind of figure is
    bootstrap: dict[str, Any]

    @property
    def champion_version(self) -> str | None:
        return self.champion["version"] if self.champion else None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Evaluation:
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class EvaluationResult(Record):
    """The evaluate step's result (its XCom): the version, where its evaluation is, its champion, the headline."""

    version: str
    evaluation_uri: str
    champion: str | None
    overall: dict[str, float | None]  # the candidate's raw auc and ndcg@10 on the holdout


@dataclass(frozen=True)
class ApprovalDecision(Record):
    """Must a human approve the flip (promotion.approval.approval), and the figures the approver is shown."""

    required: bool
    within_margin: bool
    inconclusive: bool
    why: str
    margin: float
    deltas: dict[str, float]                   # candidate - champion, debiased and paired, per compared metric
    intervals: dict[str, list[float]]          # [low, high] of each delta
    estimator: str
    champion: str | None
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None]


@dataclass(frozen=True)
class ApprovalRecord(Record):
    """A human's answer (or its absence) as staged in approval.json; uri: where, once written."""

    version: str
    logical_date: str
    decision: str  # approved | rejected | timed out
    chosen: list[str]
    by: str
    at: str
    uri: str | None = None
    asked_in: str | None = None  # the asking it answers ("<run_id> try <n>"): a retry of it keeps the answer

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        return record if self.uri is not None else {k: v for k, v in record.items() if k != "uri"}


@dataclass(frozen=True)
class GateResult:
    """The gate step's result and the flip's input (its XCom): the verdict, where gate.json is, who must approve."""

    version: str
    promotable: bool
    champion: str | None
    summary: str
    gate_uri: str | None = None
    mode: str = "gate"
    comparison: Comparison | None = None
    approval: ApprovalDecision | None = None  # None: a hand-made result (a test DAG's conf) that asks no one

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "promotable": self.promotable, "champion": self.champion,
                "summary": self.summary, "gate_uri": self.gate_uri, "mode": self.mode,
                "comparison": None if self.comparison is None else asdict(self.comparison),
                "approval": None if self.approval is None else self.approval.to_dict()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> GateResult:
        """The XCom read back, or a hand-made one naming at least version, promotable, champion and summary."""
        comparison, approval = record.get("comparison"), record.get("approval")
        return cls(version=record["version"], promotable=record["promotable"], champion=record["champion"],
                   summary=record["summary"], gate_uri=record.get("gate_uri"), mode=record.get("mode", "gate"),
                   comparison=None if comparison is None else Comparison(**comparison),
                   approval=None if approval is None else ApprovalDecision.from_dict(approval))


@dataclass(frozen=True)
class RegisteredVersion:
    """One version the register step wrote, or in a dry run (uri None) staged next to its candidate."""

    version: str
    report_uri: str
    manifest_uri: str
    promotable: bool
    uri: str | None = None  # the version's folder in the registry

    @property
    def dry_run(self) -> bool:
        return self.uri is None

    def to_dict(self) -> dict[str, Any]:
        if self.uri is None:
            return {"version": self.version, "registered": False, "dry_run": True, "promotable": self.promotable,
                    "report_uri": self.report_uri, "manifest_uri": self.manifest_uri}
        return {"version": self.version, "uri": self.uri, "manifest_uri": self.manifest_uri,
                "report_uri": self.report_uri, "promotable": self.promotable}


@dataclass(frozen=True)
class Registration:
    """The register step's result (its XCom): the evaluated candidate's version and the version that serves,
    its refit when one was registered (`serving`)."""

    candidate: RegisteredVersion
    serving_version: str
    serving: RegisteredVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        result = {**self.candidate.to_dict(), "serving_version": self.serving_version}
        return result if self.serving is None else {**result, "serving": self.serving.to_dict()}


# Each outcome's keys in the flip's XCom, after "flipped" and "canary".
_FLIP_KEYS = {
    "flipped": ("version", "evaluated", "previous", "seq", "action"),
    "unchanged": ("version", "evaluated", "previous", "seq"),
    "held_back": ("held_back", "version", "evaluated", "live", "would", "why"),
    "dry_run": ("dry_run", "version", "would", "live", "summary"),
    "canary": ("started", "version", "percent", "live", "seq"),
}


@dataclass(frozen=True)
class FlipResult:
    """The flip step's result (its XCom): what happened to the live pointer.

    outcome: flipped (the version is live now) | unchanged (it already was) | held_back (a backfill never moves
    the pointer back; staged as flip.json) | dry_run (what a gate run would do) | canary (started, or running
    already); the other fields are those of the outcome, and to_dict() has exactly its keys.
    """

    outcome: str
    version: str
    evaluated: str | None = None  # the gated version (`version` is its refit when one serves)
    previous: str | None = None
    seq: int | None = None
    action: str | None = None
    live: str | None = None
    would: str | None = None
    why: str | None = None
    summary: str | None = None
    started: bool | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in _FLIP_KEYS:
            raise ValueError(f"flip outcome must be one of {', '.join(_FLIP_KEYS)}, got {self.outcome!r}")

    @property
    def flipped(self) -> bool:
        return self.outcome == "flipped"

    @property
    def canary(self) -> bool:
        return self.outcome == "canary"

    @property
    def held_back(self) -> bool:
        return self.outcome == "held_back"

    @property
    def dry_run(self) -> bool:
        return self.outcome == "dry_run"

    def to_dict(self) -> dict[str, Any]:
        return {"flipped": self.flipped, "canary": self.canary,
                **{key: getattr(self, key) for key in _FLIP_KEYS[self.outcome]}}
