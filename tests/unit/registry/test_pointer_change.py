"""registry.pointer_change_problems: the one check of an operator's pointer change (target version, reason) that the
rollback / canary DAG params, `feedloop model` and the Models page all call."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.promotion.pointer_plan import (REASON_MAX, InvalidPointerChange, check_pointer_change,
                                             pointer_change_problems)

OK = "2026-11-20-3f9a1c2b7e"


@pytest.mark.parametrize(("to", "reason", "named", "says"), [
    pytest.param(None, "x" * (REASON_MAX + 1), "reason", "at most 500 characters, got 501", id="reason-too-long"),
    pytest.param(None, "  \t ", "reason", "required: at least 3 characters", id="reason-blank"),
    pytest.param(None, "no", "reason", "required: at least 3 characters", id="reason-too-short"),
    pytest.param(None, "bad\nmodel", "reason", "one line of text: character 0x000a at position 3", id="reason-newline"),
    pytest.param(None, "bad \ud800", "reason", "character 0xd800", id="reason-lone-surrogate"),
    pytest.param(None, None, "reason", "must be text, got NoneType", id="reason-missing"),
    pytest.param("latest", "bad model", "to", "'latest' is not a version id", id="to-a-word"),
    pytest.param("../../etc/passwd", "bad model", "to", "is not a version id", id="to-a-path"),
    pytest.param(OK + "\n", "bad model", "to", "is not a version id", id="to-with-a-trailing-newline"),
    pytest.param(OK[:11] + "a" * 100, "bad model", "to", "at most 64 characters", id="to-too-long"),
    pytest.param(7, "bad model", "to", "7 is not a version id", id="to-a-number"),
])
def test_a_bad_target_or_reason_is_named_with_its_rule(to, reason, named, says):
    ((field, why),) = pointer_change_problems(to=to, reason=reason)
    assert field == named and says in why and len(why) < 200
    with pytest.raises(InvalidPointerChange, match="nothing was changed"):
        check_pointer_change(to=to, reason=reason)


def test_a_good_change_comes_back_stripped():
    assert check_pointer_change(to=OK, reason="  CTR down 8%  ") == (OK, "CTR down 8%")
    assert check_pointer_change(to="", reason="x" * REASON_MAX) == (None, "x" * REASON_MAX)


@settings(max_examples=300, deadline=None)
@given(to=st.none() | st.text(max_size=80)
       | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]{1,60}", fullmatch=True),
       reason=st.text(max_size=600))
def test_any_text_is_either_a_change_that_can_be_recorded_or_refused_naming_the_field(to, reason):
    try:
        target, why = check_pointer_change(to=to, reason=reason)
    except InvalidPointerChange as exc:
        assert {field for field, _ in exc.problems} <= {"to", "reason"} and exc.problems
        assert len(str(exc)) < 500
        return
    assert 3 <= len(why) <= REASON_MAX and why == reason.strip()
    orjson.dumps({"version": target, "reason": why})  # what the pointer and its history record
