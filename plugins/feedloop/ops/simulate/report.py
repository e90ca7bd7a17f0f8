"""What the simulated users were shown, day by day, and how good it truly was: the simulation's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

LEGACY = "legacy"  # what the report calls the logged (pre-model) policy


@dataclass
class DayStats:
    """What the simulated users were shown on one day, by whom, and how good it truly was."""

    day: str
    lists: int = 0                                   # ranked lists shown
    by_version: dict[str, int] = field(default_factory=dict)  # lists per model version, "legacy" for the logged policy
    impressions: int = 0
    clicks: int = 0
    ndcg_sum: float = 0.0                            # ground-truth NDCG@10 of what was shown, summed over lists
    legacy_ndcg_sum: float = 0.0                     # ... of what the legacy policy would have shown, same requests
    ctr: float = 0.0                                 # online CTR: clicks / impressions shown
    ndcg: float = 0.0                                # mean ground-truth NDCG@10 of what was shown
    legacy_ndcg: float = 0.0                         # mean NDCG@10 the legacy policy gets on the same requests

    def add(self, *, version: str, impressions: int, clicks: int, ndcg: float, legacy_ndcg: float) -> None:
        self.lists += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        self.impressions += impressions
        self.clicks += clicks
        self.ndcg_sum += ndcg
        self.legacy_ndcg_sum += legacy_ndcg
        self.ctr = self.clicks / self.impressions if self.impressions else 0.0
        self.ndcg = self.ndcg_sum / self.lists
        self.legacy_ndcg = self.legacy_ndcg_sum / self.lists


@dataclass
class SimulationReport:
    start: date
    days: int
    requests: int = 0
    events: int = 0                                  # events the simulator produced
    by_type: dict[str, int] = field(default_factory=dict)
    exploration_requests: int = 0
    late_events: int = 0
    pod_impressions: int = 0                         # impressions the serving pods logged themselves
    pod_impressions_dropped: int = 0                 # ... and dropped (buffer full / Kafka failing) meanwhile
    per_day: dict[str, DayStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def day(self, day: date) -> DayStats:
        return self.per_day.setdefault(str(day), DayStats(str(day)))


def day_table(stats: list[DayStats]) -> list[str]:
    """The per-day lines: who served, online CTR, ground-truth NDCG@10 served vs the legacy policy's."""
    lines = [f"{'day':<10}  {'lists':>6}  {'CTR':>6}  {'NDCG@10':>7}  {'legacy':>7}  served by"]
    for s in stats:
        served = ", ".join(f"{v} {n:,}" for v, n in sorted(s.by_version.items()))
        lines.append(f"{s.day:<10}  {s.lists:>6,}  {s.ctr:>6.3f}  {s.ndcg:>7.3f}  {s.legacy_ndcg:>7.3f}  {served}")
    return lines
