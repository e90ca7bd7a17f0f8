"""Kafka -> event-time Parquet on S3, exactly once (see sink.py for the guarantee)."""
