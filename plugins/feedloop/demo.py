"""`make demo`: the platform end to end on the embedded stack, then what happened and where to look."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from feedloop import simulate, stack
from feedloop.config import Settings


def run(settings: Settings, *, days: int | None = None, echo: Callable[[str], None] = print) -> dict:
    t0 = time.perf_counter()
    echo("== 1. embedded stack")
    services = stack.up(settings, echo=echo)
    days = days or settings.simulate.days
    start = datetime.now(timezone.utc).date() - timedelta(days=days)
    echo(f"== 2. simulate {days} day(s) of traffic from {start}")
    report = simulate.run(settings, start=start, days=days, events_per_day=settings.simulate.events_per_day,
                          ground_truth=settings.state_path / "ground_truth.json")
    echo(f"   {report.events:,} events ({report.requests:,} requests) -> Kafka topic {settings.kafka.topic} "
         f"in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s)")
    summary = {"start": str(start), "days": days, "events": report.events, "seconds": round(time.perf_counter() - t0, 1)}
    echo("== done in {seconds}s. Where to look:".format(**summary))
    for s in services:
        for key, value in s.details.items():
            echo(f"   {s.title:<22} {key:<10} {value}")
    echo(f"   ground truth           {settings.state_path / 'ground_truth.json'}")
    echo("   stop everything with   make down")
    return summary
