"""What the simulated users were shown, day by day, and how good it truly was: the simulation's report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from feedloop.ops.simulate.arms import POOL, RECOMMEND, ArmStats

LEGACY = "legacy"  # what the report calls the logged (pre-model) policy


@dataclass
class DayStats:
    """What the simulated users were shown on one day, by whom, and how good it truly was."""

    day: str
    lists: int = 0                                   # ranked lists shown
    by_version: dict[str, int] = field(default_factory=dict)  # lists per model version, "legacy" for the logged policy
    impressions: int = 0
    clicks: int = 0
    judged: int = 0                                  # lists chosen from the request's candidate pool (not /recommend)
    ndcg_sum: float = 0.0                            # ground-truth NDCG@10 in its pool, summed over the judged lists
    legacy_ndcg_sum: float = 0.0                     # ... of what the legacy policy would have shown, same requests
    ctr: float = 0.0                                 # online CTR: clicks / impressions shown
    ndcg: float = 0.0                                # mean ground-truth NDCG@10 of the judged lists in their pools
    legacy_ndcg: float = 0.0                         # mean NDCG@10 the legacy policy gets on the same requests
    arms: dict[str, ArmStats] = field(default_factory=dict)  # with --recommend: each arm against the catalog

    def add(self, *, version: str, impressions: int, clicks: int, ndcg: float | None,
            legacy_ndcg: float | None) -> None:
        """One list; ndcg None for a /recommend list, which had no pool (its arm judges it on the catalog)."""
        self.lists += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        self.impressions += impressions
        self.clicks += clicks
        self.ctr = self.clicks / self.impressions if self.impressions else 0.0
        if ndcg is None or legacy_ndcg is None:
            return
        self.judged += 1
        self.ndcg_sum += ndcg
        self.legacy_ndcg_sum += legacy_ndcg
        self.ndcg = self.ndcg_sum / self.judged
        self.legacy_ndcg = self.legacy_ndcg_sum / self.judged

    def arm(self, name: str) -> ArmStats:
        return self.arms.setdefault(name, ArmStats())


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
    """The per-day lines: who served, online CTR, ground-truth NDCG@10 served vs the legacy policy's (in the
    requests' pools); with --recommend, each arm against the users' best items of the catalog."""
    arms = any(s.arms for s in stats)
    head = f"{'day':<10}  {'lists':>6}  {'CTR':>6}  {'NDCG@10':>7}  {'legacy':>7}" + (f"  {ARM_HEAD}" if arms else "")
    lines = [head + "  served by"]
    for s in stats:
        served = ", ".join(f"{v} {n:,}" for v, n in sorted(s.by_version.items()))
        line = f"{s.day:<10}  {s.lists:>6,}  {s.ctr:>6.3f}  {s.ndcg:>7.3f}  {s.legacy_ndcg:>7.3f}"
        if arms:
            line += "  " + arm_columns({name: asdict(a) for name, a in s.arms.items()})
        lines.append(f"{line}  {served}")
    return lines + ([ARM_NOTE] if arms else [])


ARM_HEAD = f"{'recommend lists':>15}  {'catalog NDCG@10':>15}  {'best-10 recall':>14}"
ARM_NOTE = ("catalog NDCG@10 / best-10 recall: /recommend vs the pool arm (/rank over the feed service's candidates, "
            "or legacy), each list judged against the user's truly best 10 items of the tenant's catalog")


def arm_columns(arms: Mapping[str, Mapping[str, Any]]) -> str:
    """The /recommend lists, then '/recommend vs pool' for the catalog NDCG@10 and the best-10 recall (ArmStats
    fields, as dicts: the demo keeps its days as JSON)."""
    rec, pool = arms.get(RECOMMEND), arms.get(POOL)

    def pair(name: str) -> str:
        return " vs ".join(f"{a[name]:.3f}" if a and a["lists"] else "-" for a in (rec, pool))

    return f"{rec['lists'] if rec else 0:>15,}  {pair('catalog_ndcg'):>15}  {pair('best_recall'):>14}"
