"""
### Replay engagement events

Re-ingest a time range (event hours) or an offset range of one partition from Kafka. Every
affected chunk is rebuilt from its first offset and rewritten under the same object names: the
same bytes when the log is unchanged, and never a duplicate. Trigger it from the UI with params.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from feedloop import alerts
from feedloop.ingest import tasks


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=alerts.default_args(retries=1, retry_delay=timedelta(seconds=20)),
    tags=["feedloop", "ingest", "replay"],
    params={
        "mode": Param("time", type="string", enum=["time", "offsets"],
                      description="Replay event hours in [start, end) or offsets [start_offset, end_offset) of one partition"),
        "start": Param(None, type=["null", "string"], format="date-time", description="mode=time: first hour (UTC)"),
        "end": Param(None, type=["null", "string"], format="date-time", description="mode=time: end, exclusive (UTC)"),
        "partition": Param(None, type=["null", "integer"], minimum=0, description="mode=offsets: Kafka partition"),
        "start_offset": Param(None, type=["null", "integer"], minimum=0, description="mode=offsets: first offset"),
        "end_offset": Param(None, type=["null", "integer"], minimum=1, description="mode=offsets: end offset, exclusive"),
    },
)
def replay_engagement():
    @task
    def replay(*, params: dict) -> dict:
        return tasks.run_replay(**{k: params.get(k) for k in
                                   ("mode", "start", "end", "partition", "start_offset", "end_offset")})

    replay()


replay_engagement()
