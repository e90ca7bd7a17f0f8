"""The feedloop Airflow plugin: Models and Data quality in Airflow's navigation, a Model report tab on runs.

Thin on purpose: Airflow imports every .py file in plugins/ as a top-level module (feedloop/ is
excluded by .airflowignore and imported as a package); the pages live in feedloop.ops.ui.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from feedloop.ops.ui import mount


class FeedloopPlugin(AirflowPlugin):
    name = "feedloop"
    fastapi_apps = mount.FASTAPI_APPS
    external_views = mount.EXTERNAL_VIEWS
