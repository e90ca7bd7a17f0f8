"""Expectation suites for an hour partition, instantiated from the GX JSON in include/expectations/.

Why templates with parameters: the checks are reviewed as plain GX suite JSON, while the numbers
come from config (per tenant) and from the trailing baseline, so a threshold change never edits a
suite. `meta.scope` in a template says how many times it is instantiated (see the JSON's notes).
A template's `scope_by` says how an instance reads its tenant or tenant + surface: `row_condition`
(the rows suite: a pandas filter on the hour's rows) or `column` (the metrics suite: one column per
tenant, rows@acme, or pair, ctr@acme/feed, of the one-row frame in feedloop.quality.metrics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from feedloop.quality.metrics import column

ROWS_SUITE = "engagement_hour"
METRICS_SUITE = "engagement_hour_metrics"
SEVERITIES = ("block", "warn")
SCOPES = ("hour", "tenant", "each_tenant", "tenant_surface", "newest_hour")
SCOPE_BY = ("row_condition", "column")


@dataclass(frozen=True)
class Unset:
    """A parameter with no value yet (e.g. no baseline); its expectation is skipped, with this reason."""

    reason: str


@dataclass(frozen=True)
class Instance:
    """One expectation ready for GX: its type and kwargs with every parameter filled in."""

    check: str
    scope: str  # "" or e.g. "tenant=acme surface=feed"
    gx_type: str
    kwargs: dict[str, Any]
    severity: str  # block | warn, after the config's overrides


@dataclass(frozen=True)
class Skipped:
    check: str
    scope: str
    reason: str


@dataclass(frozen=True)
class HourScope:
    """What instantiation needs to know about the hour being validated."""

    tenants: tuple[str, ...]             # known tenants (each_tenant, tenant_surface)
    overridden: tuple[str, ...]          # tenants with their own thresholds (tenant)
    surfaces: tuple[str, ...]
    newest_hour: bool
    params: Callable[[str | None, str | None], dict[str, Any]]  # (tenant, surface) -> parameter values
    severity: Callable[[str, str | None, str], str]              # (check, tenant, suite default) -> block | warn


def load_template(suites_dir: Path, name: str) -> dict[str, Any]:
    template = json.loads((suites_dir / f"{name}.json").read_text())
    if template.setdefault("scope_by", "row_condition") not in SCOPE_BY:
        raise ValueError(f"{name}.json: scope_by {template['scope_by']!r}; use one of {', '.join(SCOPE_BY)}")
    for exp in template["expectations"]:
        if template["scope_by"] == "column" and exp["meta"]["scope"] == "tenant":
            raise ValueError(f"{name}.json: {exp['meta']['check']}: scope 'tenant' needs scope_by row_condition")
        if exp["meta"]["scope"] not in SCOPES:
            raise ValueError(f"{name}.json: {exp['meta']['check']} has unknown scope {exp['meta']['scope']!r}")
        if exp["meta"].get("severity", "block") not in SEVERITIES:
            raise ValueError(f"{name}.json: {exp['meta']['check']} has severity {exp['meta']['severity']!r}; "
                             f"use one of {', '.join(SEVERITIES)}")
    return template


def instantiate(template: dict[str, Any], scope: HourScope) -> tuple[list[Instance], list[Skipped]]:
    """Every expectation of `template` for this hour; those with an Unset parameter are skipped."""
    ready: list[Instance] = []
    skipped: list[Skipped] = []
    by_column = template.get("scope_by") == "column"
    for exp in template["expectations"]:
        check = exp["meta"]["check"]
        default = exp["meta"].get("severity", "block")
        for label, condition, tenant, surface in _targets(exp["meta"]["scope"], scope):
            params = scope.params(tenant, surface)
            kwargs, unset = _fill(exp["kwargs"], params)
            if unset:
                skipped.append(Skipped(check, label, "; ".join(u.reason for u in unset)))
                continue
            if by_column and tenant is not None:
                kwargs["column"] = column(kwargs["column"], tenant if surface is None else f"{tenant}/{surface}")
            elif condition:
                kwargs |= {"row_condition": condition, "condition_parser": "pandas"}
            ready.append(Instance(check, label, exp["type"], kwargs, scope.severity(check, tenant, default)))
    return ready, skipped


def _targets(kind: str, scope: HourScope) -> list[tuple[str, str, str | None, str | None]]:
    """(label, pandas row condition, tenant, surface) for each instance of one template entry."""
    if kind == "hour":
        return [("", "", None, None)]
    if kind == "newest_hour":
        return [("", "", None, None)] if scope.newest_hour else []
    if kind == "tenant":
        others = f"tenant_id not in {list(scope.overridden)!r}" if scope.overridden else ""
        return [("", others, None, None)] + [(f"tenant={t}", f"tenant_id == {t!r}", t, None) for t in scope.overridden]
    if kind == "each_tenant":
        return [(f"tenant={t}", f"tenant_id == {t!r}", t, None) for t in scope.tenants]
    return [
        (f"tenant={t} surface={s}", f"tenant_id == {t!r} and surface == {s!r}", t, s)
        for t in scope.tenants for s in scope.surfaces
    ]


def _fill(kwargs: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], list[Unset]]:
    filled: dict[str, Any] = {}
    unset: list[Unset] = []
    for key, value in kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            value = params[value["$PARAMETER"]]
            if isinstance(value, Unset):
                unset.append(value)
        filled[key] = value
    return filled, unset


def build_suite(name: str, instances: list[Instance]):
    """A GX ExpectationSuite; each expectation's meta carries our check name and scope for reports."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return gx.ExpectationSuite(
        name=name,
        expectations=[
            ExpectationConfiguration(type=i.gx_type, kwargs=i.kwargs,
                                     meta={"check": i.check, "scope": i.scope, "severity": i.severity})
            .to_domain_obj()
            for i in instances
        ],
    )
