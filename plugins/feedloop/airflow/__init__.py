"""The Airflow boundary: task bodies, params, assets, the alert notifier, the approval operator. Stages below never import Airflow at import time."""
