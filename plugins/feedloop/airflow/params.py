"""Every manual knob of the feedloop DAGs as a typed Airflow `Param`, and the rules JSON schema cannot express.

Why one place: the trigger form (fields, dropdowns, bounds), the REST API (Airflow validates a
run's conf against these schemas on trigger and on backfill, and answers 400 naming the param)
and the first task of every run read the same definitions. That first task checks the values
again, refuses names no DAG knows (a misspelt key would otherwise be accepted and ignored), and
applies the cross-field rules (force needs a reason, accepted hours need a reason, a replay range
fits its mode) so a bad run fails at once with a message naming the param, before any work.

Optional text is typed ["null", "string"] with no default: the trigger form treats a plain string
param as required and keeps its Trigger button disabled while such a field is empty.

Date-times are plain text in UTC (`YYYY-MM-DDTHH:MM`), not `format: date-time`: the trigger
form's date-time picker converts between the browser's time zone and UTC (apache/airflow
#54466), and a replay range must mean the same hours whoever types it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from airflow.sdk import Param

from feedloop.core import utc
from feedloop.core.config import PromotionSettings, Settings
from feedloop.promotion.candidate import MODES
from feedloop.promotion.pointer_plan import (REASON_MAX, REASON_MIN, VERSION_MAX, VERSION_PATTERN,
                                             pointer_change_problems)

# months 01-12, days 01-31, hours 00-23, minutes and seconds 00-59: Airflow refuses 2026-13-01 at trigger
# time; a day the month lacks (02-30) passes the pattern and is refused by the replay rules
UTC_PATTERN = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?"
               r"(Z|\+00:00)?$")
# typed gate params -> the promotion key they set (floors are merged into the configured ones)
TYPED_GATE = {"min_auc": ("floors", "auc"), "min_ndcg_at_10": ("floors", "ndcg@10"),
              "max_regression": ("tolerance", None)}
GATE_EXAMPLE = '{"floors": {"auc": 0.55, "ndcg@10": 0.2}, "segment_tolerance": 0.05, "inconclusive": "approve"}'


class ParamError(ValueError):
    """One or more params are invalid; each problem names its param."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"param '{name}': {why}" for name, why in problems))


# ---- definitions ---------------------------------------------------------------------------------

def retrain(settings: Settings) -> dict[str, Param]:
    """retrain_ranker: what to train on, how to gate, and what the flip may do."""
    promo = settings.promotion
    return {
        "promotion_mode": Param(
            "gate", type="string", enum=list(MODES), title="Promotion mode",
            values_display={"gate": "gate: promote only if the gate passes",
                            "force": "force: promote despite the gate (needs force_reason)",
                            "dry-run": "dry-run: run every step, register nothing, change nothing live"},
            description="gate: the normal daily run. force: make the candidate live even if the gate blocks it "
                        "(never past a failed ONNX parity); the reason goes into the pointer history. dry-run: "
                        "validate, build, train, evaluate, export and gate, then stop: no version is registered "
                        "and live.json is not touched (the report is staged under ranker/runs/<day>/)."),
        "force_reason": Param(None, type=["null", "string"], maxLength=500, title="Force reason",
                              description="Required with promotion_mode=force (and only then): why the candidate "
                                          "goes live despite the gate. Recorded in live.json and its history."),
        "window_days": Param(settings.dataset.window_days, type="integer",
                             minimum=settings.dataset.min_window_days, maximum=90, title="Training window (days)",
                             description="Days of impressions in the training window, ending with the logical date "
                                         "(held out); never before retrain.start_date."),
        "objective": Param(settings.train.objective, type="string", enum=["lambdarank", "binary"],
                           title="LightGBM objective", description="lambdarank (graded labels) or binary (clicks)."),
        "min_auc": Param(None, type=["null", "number"], minimum=0, maximum=1, title="AUC floor",
                         description=f"The candidate's overall AUC must reach this (0..1). Empty: the configured "
                                     f"floor ({_floor(promo, 'auc')})."),
        "min_ndcg_at_10": Param(None, type=["null", "number"], minimum=0, maximum=1, title="NDCG@10 floor",
                                description=f"The candidate's overall NDCG@10 must reach this (0..1). Empty: the "
                                            f"configured floor ({_floor(promo, 'ndcg@10')})."),
        "max_regression": Param(None, type=["null", "number"], minimum=0, maximum=1, title="Allowed regression",
                                description=f"How far below the champion (overall, per compared debiased metric) the "
                                            f"interval of the difference may reach and still pass (0..1). Empty: "
                                            f"promotion.tolerance ({promo.tolerance}). Either way at most "
                                            f"promotion.tolerance_widths ({promo.tolerance_widths}) half-widths "
                                            "of the interval (0 = no cap)."),
        "gate_thresholds": Param({}, type="object", title="Other gate settings",
                                 description="Advanced: other promotion keys for this run, as in include/config "
                                             "(e.g. {\"inconclusive\": \"approve\", \"segment_tolerance\": 0.05}). Keys "
                                             "set by the fields above may not be repeated here."),
        "canary_percent": Param(promo.canary_percent, type="number", minimum=0, maximum=100,
                                title="Canary percent",
                                description="0: the flip makes the candidate live. N > 0: it starts a canary at N% "
                                            "of users instead (the first model always goes live)."),
        "accept_hours": Param([], type="array", items={"type": "integer", "minimum": 0, "maximum": 23},
                              uniqueItems=True, title="Force-accept hours",
                              description="Hours (0-23, UTC) of the logical date to train on despite failed "
                                          "checks. Needs accept_reason."),
        "accept_reason": Param(None, type=["null", "string"], maxLength=500, title="Force-accept reason",
                               description="Required with accept_hours (and only then): why those hours are "
                                           "accepted. Recorded with the partition's status."),
    }


def replay(settings: Settings) -> dict[str, Param]:
    """replay_engagement: an event-time range, or an offset range of one Kafka partition."""
    return {
        "mode": Param("time", type="string", enum=["time", "offsets"], title="Replay by",
                      values_display={"time": "time: event hours [start, end) in UTC",
                                      "offsets": "offsets: [start_offset, end_offset) of one partition"},
                      description="time: re-ingest the event hours in [start, end). offsets: re-ingest offsets "
                                  "[start_offset, end_offset) of one Kafka partition."),
        "start": Param(None, type=["null", "string"], pattern=UTC_PATTERN, title="Start (UTC)",
                       description="mode=time: first event hour, in UTC, as YYYY-MM-DDTHH:MM (e.g. 2026-11-20T05:00; "
                                   "a trailing Z or +00:00 is allowed, other offsets are not)."),
        "end": Param(None, type=["null", "string"], pattern=UTC_PATTERN, title="End (UTC, exclusive)",
                     description="mode=time: end of the range, exclusive, in UTC, as YYYY-MM-DDTHH:MM."),
        "partition": Param(None, type=["null", "integer"], minimum=0, maximum=settings.kafka.partitions - 1,
                           title="Partition",
                           description=f"mode=offsets: the Kafka partition of topic {settings.kafka.topic} "
                                       f"(0..{settings.kafka.partitions - 1})."),
        "start_offset": Param(None, type=["null", "integer"], minimum=0, title="Start offset",
                              description="mode=offsets: first offset to re-ingest."),
        "end_offset": Param(None, type=["null", "integer"], minimum=1, title="End offset (exclusive)",
                            description="mode=offsets: end offset, exclusive; greater than start_offset."),
    }


def rollback() -> dict[str, Param]:
    """rollback_ranker: where the pointer goes back to, and why."""
    return {
        "to_version": Param(None, type=["null", "string"], pattern=VERSION_PATTERN, maxLength=VERSION_MAX,
                            title="Target version",
                            description="Registered version to make live, e.g. 2026-11-20-3f9a1c2b7e (empty: the "
                                        "previous live version)."),
        "reason": Param("", type="string", minLength=REASON_MIN, maxLength=REASON_MAX, title="Reason",
                        description="Why (required; recorded in the pointer history)."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Show the pointer change without "
                                                                            "making it."),
    }


def canary() -> dict[str, Param]:
    """canary_ranker: promote or abort the running canary."""
    return {
        "action": Param("promote", type="string", enum=["promote", "abort"], title="Action",
                        values_display={"promote": "promote: the canary becomes live for everyone",
                                        "abort": "abort: everyone back on the live version"},
                        description="promote: the canary becomes live; abort: everyone back on the live version."),
        "reason": Param("", type="string", minLength=REASON_MIN, maxLength=REASON_MAX, title="Reason",
                        description="Why (required; recorded in the pointer history)."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Show the pointer change without "
                                                                            "making it."),
    }


# ---- checks --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    definitions: Callable[[Settings], dict[str, Param]]
    rules: Callable[[dict[str, Any], Settings], list[tuple[str, str]]]


def check(dag_id: str, values: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The run's params, checked: each against its schema, no unknown names, then the cross-field rules.

    Returns the values as the tasks use them (replay date-times as ISO UTC); raises ParamError.
    """
    spec = SPECS[dag_id]
    definitions = spec.definitions(settings)
    values = {name: (values[name] if name in values else param.value) for name, param in definitions.items()} | {
        k: v for k, v in values.items() if k not in definitions}
    problems = [(name, f"unknown param (a typo?); {dag_id} takes {', '.join(sorted(definitions))}")
                for name in sorted(set(values) - set(definitions))]
    invalid = [(name, why) for name, param in definitions.items() if (why := _schema_error(param, values[name]))]
    problems += invalid or spec.rules(values, settings)  # the rules read typed values
    if problems:
        raise ParamError(problems)
    return _normalized(dag_id, values)


def in_task(dag_id: str, params: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """check() for a task body: invalid params fail the task at once (a retry would fail again)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return check(dag_id, params, settings)
    except ParamError as exc:
        raise AirflowFailException(f"{dag_id}: invalid params, nothing was done: {exc}") from exc


def gate_overrides(values: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The promotion keys a run overrides: typed fields (floors merged into the configured ones) + gate_thresholds."""
    overrides = dict(values.get("gate_thresholds") or {})
    floors = dict(overrides.get("floors", settings.promotion.floors))
    for name, (key, metric) in TYPED_GATE.items():
        value = values.get(name)
        if value is None:
            continue
        if metric is None:
            overrides[key] = value
        else:
            floors[metric] = value
            overrides["floors"] = floors
    return overrides or None


def _retrain_rules(v: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    problems = []
    mode, reason, accept_reason = v["promotion_mode"], _text(v["force_reason"]), _text(v["accept_reason"])
    if mode == "force" and len(reason) < 3:
        problems.append(("force_reason", "required with promotion_mode=force: say why the gate is overridden"))
    if mode != "force" and reason:
        problems.append(("force_reason", f"only used with promotion_mode=force (this run's mode is {mode}); "
                                         "clear it or choose force"))
    if v["accept_hours"] and not accept_reason:
        problems.append(("accept_reason", f"required with accept_hours {v['accept_hours']}: say why those hours "
                                          "are good enough to train on"))
    if accept_reason and not v["accept_hours"]:
        problems.append(("accept_reason", "only used with accept_hours; name the hours to accept or clear it"))
    extra = v["gate_thresholds"]
    shape = _promotion_errors({**settings.promotion.model_dump(), **extra})  # first: the rest reads its shape
    if shape:
        return problems + [("gate_thresholds", f"{why}; give promotion keys as in include/config/feedloop.yaml "
                                               f"(e.g. {GATE_EXAMPLE})") for why in shape]
    for name, (key, metric) in TYPED_GATE.items():
        if v[name] is not None and key in extra and (metric is None or metric in (extra.get("floors") or {})):
            problems.append(("gate_thresholds", f"sets {key}{'.' + metric if metric else ''} that param {name} "
                                                f"also sets; give it once"))
    if not problems:
        merged = {**settings.promotion.model_dump(), **(gate_overrides(v, settings) or {})}
        problems += [("gate_thresholds", why) for why in _promotion_errors(merged)]
    return problems


def _promotion_errors(values: dict[str, Any]) -> list[str]:
    """What is wrong with promotion settings, one line per field ("floors: Input should be a valid dictionary
    (got 'abc')"); [] when they are valid."""
    from pydantic import ValidationError

    try:
        PromotionSettings.model_validate(values)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: " + ("not a promotion setting (a typo?)"
                                                        if e["type"] == "extra_forbidden"
                                                        else f"{e['msg']} (got {_short(e['input'])})")
                for e in exc.errors()]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _replay_rules(v: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    time_keys, offset_keys = ("start", "end"), ("partition", "start_offset", "end_offset")
    used, unused = (time_keys, offset_keys) if v["mode"] == "time" else (offset_keys, time_keys)
    problems = [(k, f"required with mode={v['mode']}") for k in used if v[k] is None]
    problems += [(k, f"only used with mode={'offsets' if v['mode'] == 'time' else 'time'}; clear it")
                 for k in unused if v[k] is not None]
    if problems:
        return problems
    if v["mode"] == "time":
        times = {}
        for key in time_keys:
            try:
                times[key] = utc.parse_typed(v[key])
            except utc.TimestampError as exc:  # 2026-02-30, or outside the years events may carry
                problems.append((key, str(exc)))
        if not problems and times["end"] <= times["start"]:
            problems.append(("end", f"must be after start ({v['start']} UTC)"))
    if v["mode"] == "offsets" and v["end_offset"] <= v["start_offset"]:
        problems.append(("end_offset", f"must be greater than start_offset ({v['start_offset']})"))
    return problems


def _rollback_rules(v: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    """The same bounds as `feedloop model rollback` and the Models page (registry.pointer_change_problems)."""
    return [({"to": "to_version"}.get(field, field), why)
            for field, why in pointer_change_problems(to=v["to_version"], reason=v["reason"])]


def _canary_rules(v: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    return pointer_change_problems(reason=v["reason"])


SPECS: dict[str, Spec] = {
    "retrain_ranker": Spec(retrain, _retrain_rules),
    "replay_engagement": Spec(replay, _replay_rules),
    "rollback_ranker": Spec(lambda _s: rollback(), _rollback_rules),
    "canary_ranker": Spec(lambda _s: canary(), _canary_rules),
}


def _normalized(dag_id: str, values: dict[str, Any]) -> dict[str, Any]:
    if dag_id == "replay_engagement" and values["mode"] == "time":
        return {**values, **{k: utc.parse_typed(values[k]).isoformat().replace("+00:00", "Z")
                             for k in ("start", "end")}}
    if dag_id == "retrain_ranker":
        return {**values, "force_reason": _text(values["force_reason"]) or None,
                "accept_reason": _text(values["accept_reason"]) or None}
    return values


def _text(value: str | None) -> str:
    return (value or "").strip()


def _schema_error(param: Param, value: Any) -> str | None:
    from jsonschema import FormatChecker, ValidationError, validate

    try:
        validate(value, param.schema, format_checker=FormatChecker())
    except ValidationError as exc:
        if exc.validator == "pattern":  # the regex says nothing to an operator; the description does
            return f"{exc.instance!r} is not in the expected form: {param.description}"
        return exc.message
    return None


def _floor(promo: PromotionSettings, metric: str) -> str:
    value = promo.floors.get(metric)
    return "none" if value is None else f"{value}"
