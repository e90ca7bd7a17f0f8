"""feedloop.airflow.approval: a retry of the approve task acts on the answer already given; a clear asks anew.

Airflow 3.3.2 failed an attempt that an answer had resumed (CI, 2026-12-07: the scheduler handled the parked
attempt's exit after the Approve and marked the running attempt up for retry); the retry asked again and the
Approve was lost. The try arithmetic below is what Airflow's database held in that run (tries 1-3, retries 2).
"""

from datetime import datetime, timezone

import pytest

from feedloop.airflow.approval import is_retry, resume_event
from feedloop.contract.decisions import ApprovalRecord


@pytest.mark.parametrize("try_number, max_tries, retries, retry", [
    (1, 2, 2, False),  # the run's first attempt
    (2, 2, 2, True),
    (3, 2, 2, True),
    (2, 3, 2, False),  # the first attempt after a clear at try 1 (max_tries = 1 + retries)
    (3, 3, 2, True),   # its retry: the attempt seen failing on CI
    (5, 6, 2, False),  # cleared again at try 4
    (1, 0, 0, False),  # no retries: never a retry
])
def test_a_retry_is_told_from_a_first_attempt_and_a_clear(try_number, max_tries, retries, retry):
    assert is_retry(try_number=try_number, max_tries=max_tries, retries=retries) is retry


def _record(decision: str, chosen: list[str], by: str) -> ApprovalRecord:
    return ApprovalRecord(version="2026-12-06-1b3e36c115", logical_date="2026-12-06", decision=decision,
                          chosen=chosen, by=by, at="2026-12-07T22:36:41Z", asked_in="manual__x try 2")


def test_a_recorded_answer_resumes_as_the_approver_did():
    assert resume_event(_record("approved", ["Approve"], "admin")) == {
        "chosen_options": ["Approve"], "params_input": {},
        "responded_at": datetime(2026, 12, 7, 22, 36, 41, tzinfo=timezone.utc),
        "responded_by_user": {"id": "admin", "name": "admin"}, "timedout": False}


def test_a_recorded_timeout_resumes_as_the_timeout_default():
    event = resume_event(_record("timed out", ["Reject"], "nobody (timeout: the default is Reject)"))
    assert event["timedout"] is True and event["responded_by_user"] is None and event["chosen_options"] == ["Reject"]
