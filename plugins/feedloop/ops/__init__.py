"""What operators and the demo use: the Airflow UI pages, the CLI, the embedded stack, the simulator, the demo."""
