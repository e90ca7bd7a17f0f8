"""What feedloop's task processes import, loaded once by each Celery worker (`production.worker_preload`).

Why: on Linux Airflow's task supervisor forks the task process from the Celery pool process (no
exec), so a module the worker imported before its pool started is already loaded in every task.
Without this each task process imports the DAG files' task modules again (0.5-1 s of DAG parse),
`validate` imports Great Expectations (3-5 s on 2 busy cores) and an alert the Slack and SMTP hooks
(bench/validate_task.py). Only imports here, no clients, connections or files to inherit; the native
threads numpy starts at import are forked today already (Airflow's own Celery preload imports numpy).
Last, gc.freeze(): the objects loaded so far live as long as the worker, so the task processes' garbage
collector leaves them alone instead of walking them in every full collection (and copying each page it
touches, as they are shared with the worker since the fork).
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # as quality.runner sets it: no phone-home from workers

import great_expectations  # noqa: E402,F401  (quality.runner imports it lazily, inside the task)
from airflow.providers.slack.hooks import slack_webhook  # noqa: E402,F401  (alerts.send, when a message goes out)
from airflow.providers.smtp.hooks import smtp  # noqa: E402,F401

from feedloop.airflow import (  # noqa: E402,F401  (what the DAG files import)
    approval, assets, ingest_tasks, notifier, params, promotion_tasks, quality_tasks, retriever_tasks, training_tasks,
)

gc.freeze()
