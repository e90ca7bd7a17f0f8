"""feedloop.airflow.approval: a retry of the approve task acts on the answer already given; a clear asks anew.

Airflow 3.3.2 failed an attempt that an answer had resumed (CI, 2026-12-07: the scheduler handled the parked
attempt's exit after the Approve and marked the running attempt up for retry); the retry asked again and the
Approve was lost. The try arithmetic below is what Airflow's database held in that run (tries 1-3, retries 2).
"""

from datetime import datetime, timezone

import pytest
from airflow.sdk.api.datamodels._generated import HITLDetailResponse, HITLUser

from feedloop.airflow.approval import answer_to_keep, is_retry

AT = datetime(2026, 12, 7, 22, 36, 37, tzinfo=timezone.utc)


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


def test_an_answer_given_is_kept_as_airflows_resume_event():
    response = HITLDetailResponse(response_received=True, responded_by_user=HITLUser(id="admin", name="admin"),
                                  responded_at=AT, chosen_options=["Approve"], params_input=None)
    assert answer_to_keep(response) == {"chosen_options": ["Approve"], "params_input": {}, "responded_at": AT,
                                        "responded_by_user": {"id": "admin", "name": "admin"}, "timedout": False}


def test_the_timeout_default_is_kept_as_a_timeout():
    response = HITLDetailResponse(response_received=True, responded_by_user=None, responded_at=AT,
                                  chosen_options=["Reject"])
    assert answer_to_keep(response)["timedout"] is True


@pytest.mark.parametrize("response", [
    None,  # no request was ever written (the earlier attempt failed before asking)
    HITLDetailResponse(response_received=False, responded_at=None, chosen_options=None),
])
def test_no_answer_means_ask(response):
    assert answer_to_keep(response) is None
