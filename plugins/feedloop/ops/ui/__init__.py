"""feedloop's pages inside Airflow's UI: Models, Data quality and the Model report tab of retrain runs.

mount      what plugins/feedloop_plugin.py registers (lazily built app, navigation entries)
app        the FastAPI routes, behind Airflow's login and permissions
models     version summaries (cached: versions are immutable), pointer history, pointer changes
runs       which version a retrain_ranker run produced
airflow_db the facts read from Airflow's metadata database
"""
