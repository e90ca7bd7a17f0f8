"""replay_engagement's start/end: any text gives a UTC time in range or a problem naming the param, never a crash.

A run whose params fail here fails in its first task (params.in_task) before any work, with the
message in the task log; the pattern part also makes Airflow refuse the trigger itself (400).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.airflow import params
from feedloop.core.config import Settings

SETTINGS = Settings()
END = "2026-11-20T07:00"


def problems(values: dict) -> dict[str, str]:
    with pytest.raises(params.ParamError) as exc:
        params.check("replay_engagement", values, SETTINGS)
    return dict(exc.value.problems)


@pytest.mark.parametrize("start, says", [
    pytest.param("2026-13-01T00:00", "expected form", id="month-13"),
    pytest.param("2026-11-31T00:00", "day is out of range for month", id="november-31"),
    pytest.param("2026-02-29T00:00", "day is out of range for month", id="february-29-not-a-leap-year"),
    pytest.param("2026-11-20T24:00", "expected form", id="hour-24"),
    pytest.param("2026-11-20T05:60", "expected form", id="minute-60"),
    pytest.param("0001-01-01T00:00", "between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z", id="year-1"),
    pytest.param("2100-01-01T00:00", "between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z", id="year-2100"),
])
def test_an_impossible_start_is_refused_naming_the_param_and_the_rule(start, says):
    found = problems({"start": start, "end": "2099-11-20T07:00"})
    assert set(found) == {"start"} and says in found["start"], found


def test_the_reproduced_month_13_fails_the_task_before_any_work_with_the_message():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"replay_engagement: invalid params, nothing was done: "
                                                   r"param 'start': '2026-13-01T00:00' is not in the expected form"):
        params.in_task("replay_engagement", {"start": "2026-13-01T00:00", "end": END}, SETTINGS)


def test_an_impossible_end_is_named_too_and_both_are_reported_at_once():
    found = problems({"start": "2026-02-30T00:00", "end": "2026-04-31T00:00"})
    assert set(found) == {"start", "end"}


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(
    st.text(max_size=30),
    st.from_regex(params.UTC_PATTERN, fullmatch=True),
    st.builds("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}".format, st.integers(0, 9999), st.integers(0, 99),
              st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
))
def test_any_start_text_is_a_utc_time_or_a_problem_naming_start(text):
    try:
        checked = params.check("replay_engagement", {"start": text, "end": "2099-12-31T23:59"}, SETTINGS)
    except params.ParamError as exc:
        assert [name for name, _ in exc.problems] in (["start"], ["end"]), exc.problems  # end: start is after it
        assert all(why for _, why in exc.problems)
    else:
        assert re.fullmatch(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", checked["start"])
