"""feedloop: a continuous-learning platform for ranking models, orchestrated by Airflow."""

__version__ = "0.1.0"
