"""The Airflow boundary: task bodies, params, assets, links, the approval operator. Stages below never import Airflow at import time."""
