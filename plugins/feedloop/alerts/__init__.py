"""Alerts: what an incident says (content, render), its record in S3 (incidents), the links it carries and its delivery (send).

Why below promotion and above quality: a rollback announces itself through `send`, and a failed
validation or a blocked gate is described from the quality summaries and the gate's checks. Nothing
here imports Airflow at import time: the Airflow notifier that fires these is feedloop.airflow.notifier.
"""
