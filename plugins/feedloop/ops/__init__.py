"""What operators and the demo use: alerts, the Airflow UI pages, the CLI, the embedded stack, the simulator, the demo."""
