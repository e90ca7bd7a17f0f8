"""`feedloop data status --day D`: is a day's data fine? One line per hour partition, exit 3 if not.

Why in the CLI: "is today's data fine" must be answerable from a terminal or a script without
opening Airflow; the states are the Data quality view's (feedloop.quality.overview), read the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from feedloop.core.config import load_settings
from feedloop.ops.cli_args import day_arg
from feedloop.ops.cli_output import EXIT_CHECK_FAILED, EXIT_OK, emit


def add_data_parser(sub: Any) -> None:
    """Register the `data` command group on the top-level subparsers."""
    data = sub.add_parser("data", help="the lake's hour partitions and their validation state")
    actions = data.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="per hour of DAY: validated, quarantined (with the failed checks), "
                                               "force-accepted, not validated or missing; exit 3 if any hour is "
                                               "quarantined or the day's checks failed")
    status.add_argument("--day", type=day_arg, required=True, help="the day (YYYY-MM-DD, UTC)")
    data.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from feedloop.core.storage import ObjectStore  # lazy: a command loads only its own subsystem
    from feedloop.quality.overview import QUARANTINED, day_status  # lazy: a command loads only its own subsystem

    settings = load_settings()
    store, bucket = ObjectStore.from_settings(settings), settings.s3.lake_bucket
    status = day_status(store, bucket, args.day)
    failed = status.counts.get(QUARANTINED, 0) > 0 or bool(status.day_failures)
    payload = {**dataclasses.asdict(status), "failed": failed,
               "report": store.uri(bucket, status.index_key) if status.index_key else None}
    emit(args, payload, lambda: _text(payload))
    return EXIT_CHECK_FAILED if failed else EXIT_OK


def _text(status: dict[str, Any]) -> str:
    if status["validated_at"]:
        head = (f"{status['day']}: validated at {status['validated_at']} by run {status['run_id']}: "
                f"{status['verdict']} (report {status['report']})")
    else:
        head = f"{status['day']}: never validated"
    lines = [head, *(f"  day check failed: {f}" for f in status["day_failures"]),
             f"  {'hour':<4}  {'state':<14}  {'rows':>7}  failed checks / why"]
    for h in status["hours"]:
        rows = "-" if h["rows"] is None else f"{h['rows']:,}"
        lines.append(f"  {h['hour']:02d}    {h['state']:<14}  {rows:>7}  {h['why']}")
    lines.append("  " + ", ".join(f"{state} {n}" for state, n in status["counts"].items()))
    return "\n".join(lines)
