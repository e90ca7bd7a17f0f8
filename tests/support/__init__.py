"""Helpers shared by the tests: hand-built lake data, registered versions, Kafka I/O, network faults, helper DAGs."""
