"""Airflow task bodies of the promotion: the retrain DAG's evaluate .. flip, the rollback and canary DAGs.

Each body calls one library function (feedloop.promotion), hands its typed result on as the XCom dict
(to_dict; the flip reads the gate's back with GateResult.from_dict) and turns its refusals into Airflow's
terms: a blocked promotion or a refused pointer change fails the task at once (one alert, no
retries: a retry would be refused again), a lost compare-and-swap race is raised as it is (a retry
reads the new pointer), and a flip a human rejected is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from feedloop.airflow.params import gate_overrides
from feedloop.airflow.training_tasks import run_settings
from feedloop.contract.decisions import GateResult
from feedloop.core.config import load_settings
from feedloop.core.errors import NotApproved, PromotionBlocked
from feedloop.promotion import registration, steps
from feedloop.promotion.flip import flip_pointer
from feedloop.promotion.pointer_change import change_pointer, rollback
from feedloop.promotion.pointer_plan import PointerRaceLost, RegistryError

log = logging.getLogger(__name__)

CANARY_ACTIONS = {"promote": "promote-canary", "abort": "abort-canary"}  # the canary_ranker param action


@contextmanager
def blocked_fails() -> Iterator[None]:
    """A blocked promotion fails the task at once (one alert, no retries)."""
    try:
        yield
    except PromotionBlocked as exc:
        raise AirflowFailException(str(exc)) from exc


def evaluate(*, ds: str) -> dict[str, Any]:
    with blocked_fails():
        return steps.evaluate_candidate(ds=ds, settings=load_settings()).to_dict()


def export(*, ds: str) -> dict[str, Any]:
    with blocked_fails():
        return steps.export_candidate(ds=ds, settings=load_settings())


def gate(*, ds: str, params: dict[str, Any]) -> dict[str, Any]:
    settings = load_settings()
    with blocked_fails():
        return steps.gate_candidate(ds=ds, overrides=gate_overrides(params, settings), mode=params["promotion_mode"],
                                    settings=settings).to_dict()


def refit(*, ds: str, params: dict[str, Any]) -> dict[str, Any]:
    with blocked_fails():
        return steps.refit_candidate(ds=ds, mode=params["promotion_mode"], settings=run_settings(params))


def register(*, ds: str, params: dict[str, Any]) -> dict[str, Any]:
    with blocked_fails():
        return registration.register_candidate(ds=ds, mode=params["promotion_mode"], settings=load_settings()).to_dict()


def flip(*, ds: str, decision: dict[str, Any], run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The flip; a recorded Reject (or no answer) skips it, as the approve step does (the flip re-run after
    clearing it included)."""
    try:
        with blocked_fails():
            return flip_pointer(ds=ds, gate=GateResult.from_dict(decision), promoted_by=f"retrain_ranker {run_id}",
                                canary_percent=params.get("canary_percent"), mode=params["promotion_mode"],
                                force_reason=params.get("force_reason") or "", settings=load_settings()).to_dict()
    except NotApproved as exc:
        raise AirflowSkipException(str(exc)) from exc


def run_rollback(*, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The rollback_ranker task body: a refused rollback fails at once (a retry would be refused again)."""
    try:
        result = rollback(to=params.get("to_version") or None, reason=params.get("reason") or "",
                          dry_run=bool(params.get("dry_run")), by=f"rollback_ranker {run_id}",
                          settings=load_settings())
    except PointerRaceLost:
        raise  # another flip won: a retry reads the new pointer
    except RegistryError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("%s %s -> %s", "dry run:" if result["dry_run"] else "rolled back", result["from"], result["to"])
    return result


def run_canary(*, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The canary_ranker task body: promote or abort the running canary; a refusal fails at once."""
    action = CANARY_ACTIONS[params["action"]]
    try:
        result = change_pointer(action, reason=params.get("reason") or "", dry_run=bool(params.get("dry_run")),
                                by=f"canary_ranker {run_id}", settings=load_settings()).summary()
    except PointerRaceLost:
        raise  # another pointer change won: a retry reads the new pointer
    except RegistryError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("%s%s: live %s, canary %s", "dry run: " if result["dry_run"] else "", result["action"], result["live"],
             result["canary"])
    return result
