"""The retrain DAG's optional human approval: Airflow's own ApprovalOperator, asked only for close calls.

Why the standard provider's operator: the request shows up in Airflow's UI (the run's task and the
"Required actions" list) behind its login and permissions, the REST API answers it, and in Airflow
3.3 the task waits in the awaiting-input state without holding a worker slot. feedloop adds when to
ask (feedloop.promotion.approval: a candidate that passed the gate within promotion.approval_margin
of the champion), what to show (the comparison and the report), a record of the answer, and keeping
an answer across a retry of the attempt it was given to (see answer_to_keep).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from feedloop.contract.decisions import GateResult
from feedloop.core.config import load_settings
from feedloop.promotion.approval import approval_request, record_approval


class PromotionApproval(ApprovalOperator):
    """Approve or Reject the flip of a close-call candidate; skipped, with the reason, when no one needs asking.

    Reject, or no answer within promotion.approval_timeout_minutes (the default answer is Reject),
    skips the flip and records the decision as approval.json next to the candidate.
    """

    def __init__(self, *, gate_task_id: str, register_task_id: str, **kwargs: Any) -> None:
        minutes = load_settings().promotion.approval_timeout_minutes
        # a retry only acts on the answer already given (or asks, if none was): no reason to wait minutes
        kwargs.setdefault("retry_delay", timedelta(seconds=10))
        super().__init__(subject="Promote the candidate?", defaults=self.REJECT,
                         response_timeout=timedelta(minutes=minutes), **kwargs)
        self.gate_task_id, self.register_task_id = gate_task_id, register_task_id

    @property
    def serialized_params(self) -> dict[str, dict[str, Any]]:
        return {}  # the approver answers Approve / Reject; the DAG's params are not inputs of this form

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        ti = context["ti"]
        gate = GateResult.from_dict(ti.xcom_pull(task_ids=self.gate_task_id))
        if not gate.approval.required:
            raise AirflowSkipException(f"no approval asked: {gate.approval.why}")
        self.subject, self.body = approval_request(
            gate=gate, report_uri=ti.xcom_pull(task_ids=self.register_task_id)["report_uri"],
            run_url=_run_url(ti.dag_id, ti.run_id))
        if is_retry(try_number=ti.try_number, max_tries=ti.max_tries, retries=self.retries):
            answer = answer_to_keep(_hitl_response(ti.id))
            if answer is not None:
                self.log.warning("attempt %s acts on the answer %s given to an earlier attempt of this run at %s "
                                 "(Airflow failed that attempt after the answer); not asking again",
                                 ti.try_number, answer["chosen_options"], answer["responded_at"])
                return self.execute_complete(context, event=answer)
        self.log.info("waiting up to %s for Approve / Reject: %s", self.response_timeout, self.subject)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        """Record the answer, then let ApprovalOperator act on it.

        The record is pushed as this task's return value first: on Reject the parent skips the flip by
        raising (DownstreamTasksSkipped), so nothing returned after it would be kept.
        """
        ti = context["ti"]
        gate = GateResult.from_dict(ti.xcom_pull(task_ids=self.gate_task_id))
        user = event.get("responded_by_user") or {}
        record = record_approval(ds=context["ds"], version=gate.version, chosen=event["chosen_options"],
                                 by=user.get("name") or user.get("id"), timed_out=bool(event.get("timedout")),
                                 settings=load_settings())
        ti.xcom_push(key="return_value", value=record.to_dict())
        super().execute_complete(context=context, event=event)


def is_retry(*, try_number: int, max_tries: int, retries: int) -> bool:
    """Whether this attempt is a retry of a failed one, not the first since the run began or an operator's clear.

    Airflow sets max_tries to retries when the run begins and to the try number at a clear + retries.
    """
    return retries > 0 and try_number > max_tries - retries + 1


def answer_to_keep(response: Any | None) -> dict[str, Any] | None:
    """The resume event of an answer already given, shaped as Airflow's own resume (None: nobody answered).

    Why: Airflow 3.3.2 can fail the attempt an answer resumed. The attempt that parked and the resumed one
    share a try number; when the scheduler handles the parked attempt's exit only after the answer (it lags
    by seconds on busy cores), it finds the task running and marks it up for retry ("finished with state
    success, but the task instance's state attribute is running"). The retry would ask again, and its
    request would erase the answer (upsert_hitl_detail keeps one response per task instance), so the
    approver's Approve or Reject would be lost. A retry keeps it instead. An operator's clear is not a retry
    (Airflow sets max_tries to the try number at the clear + retries): it asks anew.
    """
    if response is None or not response.response_received:
        return None
    user = response.responded_by_user
    return {"chosen_options": list(response.chosen_options or []), "params_input": response.params_input or {},
            "responded_at": response.responded_at, "responded_by_user": user.model_dump() if user else None,
            "timedout": user is None}  # the scheduler's timeout sweep answers the defaults as nobody


def _hitl_response(ti_id: Any) -> Any | None:
    """This task instance's HITL response as the execution API has it (None: no request was ever written)."""
    from airflow.sdk.exceptions import AirflowRuntimeError
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    try:
        return get_hitl_detail_content_detail(ti_id)
    except AirflowRuntimeError as exc:
        if (exc.error.detail or {}).get("status_code") == 404:
            return None
        raise


def _run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (its Model report tab sits there)."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
