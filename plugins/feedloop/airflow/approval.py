"""The retrain DAG's optional human approval: Airflow's own ApprovalOperator, asked only for close calls.

Why the standard provider's operator: the request shows up in Airflow's UI (the run's task and the
"Required actions" list) behind its login and permissions, the REST API answers it, and in Airflow
3.3 the task waits in the awaiting-input state without holding a worker slot. feedloop adds when to
ask (feedloop.promotion.approval: a candidate that passed the gate within promotion.approval_margin
of the champion), what to show (the comparison and the report), a record of the answer, and keeping
that answer across a retry of the attempt it was given to (see PromotionApproval.execute).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from feedloop.contract.decisions import ApprovalRecord, GateResult
from feedloop.core.config import load_settings
from feedloop.promotion.approval import answer_to, approval_request, record_approval


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
        """Ask, unless this attempt retries one whose question was already answered: then act on that answer.

        Why: Airflow 3.3.2 can fail the attempt an answer resumed. The attempt that parked and the resumed
        one share a try number; when the scheduler handles the parked attempt's exit only after the answer
        (seconds late on busy cores), it finds the task running and marks it up for retry ("finished with
        state success, but the task instance's state attribute is running"). Asking again would erase the
        answer in Airflow (one response per task instance) and lose the approver's decision. The resumed
        attempt records it first thing (approval.json, with the asking it answers), so the retry finds it.
        """
        from airflow.sdk.exceptions import AirflowSkipException

        ti = context["ti"]
        gate = GateResult.from_dict(ti.xcom_pull(task_ids=self.gate_task_id))
        if not gate.approval.required:
            raise AirflowSkipException(f"no approval asked: {gate.approval.why}")
        if is_retry(try_number=ti.try_number, max_tries=ti.max_tries, retries=self.retries):
            kept = answer_to(ds=context["ds"], version=gate.version, asked_in=self._asking(ti),
                             settings=load_settings())
            if kept is not None:
                self.log.warning("attempt %s acts on the answer %s recorded at %s by an earlier attempt of this asking "
                                 "(Airflow failed that attempt after the answer); not asking again",
                                 ti.try_number, kept.chosen, kept.at)
                self._act_on(context, kept, resume_event(kept))
                return None
        self.subject, self.body = approval_request(
            gate=gate, report_uri=ti.xcom_pull(task_ids=self.register_task_id)["report_uri"],
            run_url=_run_url(ti.dag_id, ti.run_id))
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
                                 settings=load_settings(), asked_in=self._asking(ti))
        self._act_on(context, record, event)

    def _act_on(self, context: Any, record: ApprovalRecord, event: dict[str, Any]) -> None:
        """Push the record as this task's return value, then let ApprovalOperator flip or skip on the answer."""
        context["ti"].xcom_push(key="return_value", value=record.to_dict())
        super().execute_complete(context=context, event=event)

    def _asking(self, ti: Any) -> str:
        """This asking of the question: its run and the first try of it (the run's first, or the one after a clear)."""
        return f"{ti.run_id} try {first_try(max_tries=ti.max_tries, retries=self.retries)}"


def first_try(*, max_tries: int, retries: int) -> int:
    """The first try of the current asking: Airflow sets max_tries to retries when the run begins and to the
    try number at a clear + retries, so an operator's clear starts a new asking."""
    return max_tries - retries + 1


def is_retry(*, try_number: int, max_tries: int, retries: int) -> bool:
    """Whether this attempt is a retry of a failed one, not the first since the run began or an operator's clear."""
    return retries > 0 and try_number > first_try(max_tries=max_tries, retries=retries)


def resume_event(record: ApprovalRecord) -> dict[str, Any]:
    """A recorded answer as the event Airflow resumes the operator with (the timeout default answers as nobody)."""
    timed_out = record.decision == "timed out"
    return {"chosen_options": list(record.chosen), "params_input": {},
            "responded_at": datetime.fromisoformat(record.at.replace("Z", "+00:00")),
            "responded_by_user": None if timed_out else {"id": record.by, "name": record.by}, "timedout": timed_out}


def _run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (its Model report tab sits there)."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
