"""Synthetic engagement traffic with a hidden ground truth, produced to Kafka.

world.py     the hidden truth (users, items, authors, utility), stable ids, true_gain and ndcg_at_k
text.py      the items' titles and descriptions: words of the item's topic, with noise
traffic.py   when requests come and how eager users are to click: steady or bursty days
users.py     the Simulator: each day's requests, the lists shown (legacy policy or the pods), clicks, Kafka records
arms.py      with --recommend: which requests ask POST /recommend, and each arm judged against the catalog
report.py    what was shown each day and how good it truly was (SimulationReport, DayStats, day_table)
publish.py   produce() to Kafka, write_catalog() to the lake, run(): the whole simulation against the services
"""

from __future__ import annotations

from feedloop.ops.simulate.publish import produce, run, write_catalog
from feedloop.ops.simulate.arms import POOL, RECOMMEND, ArmStats
from feedloop.ops.simulate.report import ARM_NOTE, ARM_HEAD, LEGACY, DayStats, SimulationReport, arm_columns, day_table
from feedloop.ops.simulate.users import Record, Simulator
from feedloop.ops.simulate.world import NDCG_K, Ids, World, ndcg_at_k, true_gain

__all__ = ["ARM_HEAD", "ARM_NOTE", "LEGACY", "NDCG_K", "POOL", "RECOMMEND", "ArmStats", "DayStats", "Ids", "Record",
           "SimulationReport", "Simulator", "World", "arm_columns", "day_table", "ndcg_at_k", "produce", "run",
           "true_gain", "write_catalog"]
