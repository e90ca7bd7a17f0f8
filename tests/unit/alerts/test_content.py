"""What alerts say: streaks of failing checks, the exact commands, and both renderings."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, timezone

from feedloop.alerts.content import Run, failing_streaks, for_failure, task_failure, validation_actions
from feedloop.alerts.render import email_html, slack_text

RUN = Run(dag_id="retrain_ranker", task_id="validate", run_id="scheduled__2026-11-06T00:00:00+00:00",
          day=date(2026, 11, 6), logical_date=datetime(2026, 11, 6, tzinfo=timezone.utc),
          run_url="http://af/dags/retrain_ranker/runs/scheduled__2026-11-06T00%3A00%3A00%2B00%3A00",
          log_url="http://af/log?a=1&b=2")


def _summary(*checks: str, accepted: bool = False) -> dict:
    state = "accepted" if accepted else "failed"
    return {"day_failures": [], "hours": {"22": {"state": state, "failures": [{"check": c} for c in checks]},
                                          "23": {"state": "passed", "failures": []}}}


def test_a_check_fails_for_as_many_days_as_it_failed_in_a_row():
    earlier = [_summary("position_range", "volume"), _summary("position_range", accepted=True), None,
               _summary("position_range")]
    assert failing_streaks({"position_range", "volume", "ctr"}, earlier) == {
        "position_range": 3, "volume": 2, "ctr": 1}  # an accepted hour still failed; a day with no validation ends it


def test_validation_actions_are_exact_commands():
    actions = validation_actions(RUN, [5, 22, 23], "2026-11-04-abc")
    commands = [c for _, c in actions]
    assert commands == [
        "feedloop ingest replay --start-time 2026-11-06T05:00 --end-time 2026-11-06T06:00",
        "feedloop ingest replay --start-time 2026-11-06T22:00 --end-time 2026-11-07T00:00",
        "airflow backfill create --dag-id retrain_ranker --from-date 2026-11-06 --to-date 2026-11-06 "
        "--reprocess-behavior failed --dag-run-conf '{\"accept_hours\": [5, 22, 23], \"accept_reason\": \"WHY\"}'",
        'feedloop model rollback --to 2026-11-04-abc --reason "WHY"',
    ]
    assert "accept_hours [5, 22, 23]" in actions[2][0] and "Backfill 2026-11-06 to 2026-11-06" in actions[2][0]


def test_a_day_with_no_partitions_replays_the_whole_day_and_cannot_be_force_accepted():
    commands = [c for _, c in validation_actions(RUN, [], None)]
    assert commands == ["feedloop ingest replay --start-time 2026-11-06T00:00 --end-time 2026-11-07T00:00",
                        'feedloop model rollback --to VERSION --reason "WHY"']


def test_any_other_failure_names_the_error_and_its_cause():
    try:
        try:
            raise ConnectionError("S3 endpoint http://s3:8333 refused the connection")
        except ConnectionError as exc:
            raise RuntimeError("task failed") from exc
    except RuntimeError as exc:
        error = exc
    content = for_failure(None, RUN, error, failing_days=lambda: 2)
    assert content["kind"] == "task failed" and content["details"] == ["RuntimeError: task failed"]
    assert ("Failing for", "2 days in a row (since 2026-11-05)") in content["fields"]
    assert content["links"] == [("Airflow run", RUN.run_url), ("Task log", RUN.log_url)]


def test_slack_escapes_text_and_links_while_email_is_html():
    content = task_failure(RUN, ValueError("a < b & c > d"), failing_days=1)
    text = slack_text(content, footer="f")
    assert "ValueError: a &lt; b &amp; c &gt; d" in text
    assert "Task log: <http://af/log?a=1&amp;b=2|open>" in text
    assert text.splitlines()[0] == (":rotating_light: *[feedloop] retrain_ranker.validate failed for 2026-11-06: "
                                    "task failed, ValueError: a &lt; b &amp; c &gt; d*")
    body = email_html(content)
    assert "ValueError: a &lt; b &amp; c &gt; d" in body
    assert [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)] == [RUN.run_url, RUN.log_url]
    assert "DAG: retrain_ranker" in body and "Logical date: 2026-11-06T00:00:00+00:00" in body


def test_a_flip_without_a_recorded_approval_alerts_what_to_do_instead_of_crashing(monkeypatch):
    """recorded_approval raises PromotionBlocked(check="approval"); the alert had no entry for it (KeyError)."""
    from feedloop.alerts import content
    from feedloop.core.errors import PromotionBlocked

    monkeypatch.setattr(content, "_rollback_target", lambda _settings: None)  # no live pointer to read here
    exc = PromotionBlocked("2026-11-06-ab needs a human's Approve and none is recorded", check="approval",
                           version="2026-11-06-ab", champion="2026-11-05-cd")
    found = content.for_failure(None, RUN, exc, failing_days=lambda: 1)
    assert found["kind"] == "approval missing"
    assert found["headline"] == ("2026-11-06-ab needs a human's Approve and none is recorded; "
                                 "2026-11-05-cd stays live")
    assert [a for a, _cmd in found["actions"]][0].startswith("Ask again: Airflow run -> approve -> Clear task")
