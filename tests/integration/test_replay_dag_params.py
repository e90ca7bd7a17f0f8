"""replay_engagement with impossible times, through `airflow dags test`: the run fails before any work, saying why.

month 13 breaks the param's pattern (Airflow refuses the run's params, naming `start`); February 30
passes the pattern and is refused by the first task (params.in_task: AirflowFailException, no retry),
the message naming the param and the rule in the task log. Either way nothing is replayed.
"""

from __future__ import annotations

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.mark.parametrize("start, says", [
    pytest.param("2026-13-01T00:00", "2026-13-01T00:00", id="month-13-refused-by-the-param-schema"),
    pytest.param("2026-02-30T00:00", "param 'start': '2026-02-30T00:00' is not a date-time (day is out of range "
                                     "for month)", id="february-30-refused-by-the-first-task"),
])
def test_an_impossible_replay_time_fails_the_run_naming_the_param(airflow_cli, topic, start, says):
    conf = orjson.dumps({"start": start, "end": "2026-03-02T00:00"}).decode()
    result = airflow_cli("dags", "test", "replay_engagement", "2026-11-20T00:00:00+00:00", "--conf", conf,
                         env_extra={"FEEDLOOP_KAFKA__TOPIC": topic})
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]  # `airflow dags test` exits non-zero for a failed or refused run
    assert says in out and "start" in out, out[-3000:]
    assert "replayed" not in out, "the replay ran"
