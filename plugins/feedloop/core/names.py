"""The names other systems know feedloop by: its DAG ids and its pages' routes inside Airflow.

Why at the bottom: alerts link to runs and pages, the UI guards routes by DAG, the CLI triggers DAGs;
none of them should import the DAG files or the Airflow plugin to spell a name.
"""

URL_PREFIX = "/feedloop"
RETRAIN_DAG = "retrain_ranker"
INGEST_DAG = "ingest_engagement"
ROLLBACK_DAG = "rollback_ranker"
CANARY_DAG = "canary_ranker"
MODELS_ROUTE = "feedloop-models"          # Airflow serves the Models view at /plugin/feedloop-models
QUALITY_ROUTE = "feedloop-data-quality"
REPORT_ROUTE = "feedloop-model-report"
REPLAY_DAG = "replay_engagement"
