"""`feedloop model ...`: list and show registered versions, the pointer history, and roll back.

Why the CLI goes through feedloop.promotion / feedloop.registry: a rollback from a terminal is the
same compare-and-swap as the DAG's, so it cannot race a promotion into a torn pointer.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import Any


def add_model_parser(sub: Any) -> None:
    """Register the `model` command group on the top-level subparsers."""
    model = sub.add_parser("model", help="registered ranker versions, the live pointer, rollback")
    actions = model.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every registered version, oldest first; * marks the live one")
    show = actions.add_parser("show", help="one version: metrics, gate decision, artifacts")
    show.add_argument("version")
    actions.add_parser("history", help="every pointer flip: when, old -> new, who, why")
    rb = actions.add_parser("rollback", help="point live.json back (compare-and-swap)")
    rb.add_argument("--to", help="target version (default: the previous live version)")
    rb.add_argument("--reason", help="why (recorded in the pointer and its history; required unless --dry-run)")
    rb.add_argument("--dry-run", action="store_true", help="print the pointer diff, change nothing")
    model.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from feedloop.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, _emit, _log
    from feedloop.config import load_settings
    from feedloop.registry import Registry, RegistryError

    settings = load_settings()
    registry = Registry.from_settings(settings)
    try:
        if args.action == "list":
            rows = _list(registry)
            columns = ("live", "version", "registered_at", "auc", "ndcg@10", "promotable")
            _emit(args, rows, lambda: _table(rows, columns))
        elif args.action == "show":
            shown = _show(registry, args.version)
            _emit(args, shown, lambda: "\n".join(f"{k:<14} {v}" for k, v in shown.items()))
        elif args.action == "history":
            from feedloop.registry import entries

            rows = entries(registry.history())
            _emit(args, rows, lambda: _table(rows, ("seq", "at", "from", "to", "action", "by", "reason")))
        else:
            if not args.dry_run and not (args.reason or "").strip():
                _log("feedloop model rollback: give --reason (recorded with the flip), or --dry-run")
                return EXIT_USAGE
            from feedloop import promotion

            result = promotion.rollback(to=args.to, reason=args.reason or "(dry run)", dry_run=args.dry_run,
                                        by=f"cli {getpass.getuser()}@{socket.gethostname()}", settings=settings)
            _emit(args, result, lambda: _rollback_text(result))
    except RegistryError as exc:
        _log(f"feedloop: {exc}")
        return EXIT_ERROR
    return EXIT_OK


def _list(registry) -> list[dict[str, Any]]:
    live = registry.live()
    rows = []
    for version in registry.versions():
        manifest = registry.manifest(version)
        rows.append({"live": "*" if live and live.version == version else "", "version": version,
                     "registered_at": manifest.get("registered_at"), "auc": manifest["metrics"].get("auc"),
                     "ndcg@10": manifest["metrics"].get("ndcg@10"), "promotable": manifest["gate"]["promotable"],
                     "uri": registry.version_uri(version)})
    return rows


def _show(registry, version: str) -> dict[str, Any]:
    from feedloop.registry import RegistryError

    manifest = registry.manifest(version)
    if manifest is None:
        raise RegistryError(f"version {version} is not registered")
    live = registry.live()
    return {"version": version, "uri": registry.version_uri(version), "live": bool(live and live.version == version),
            "registered_at": manifest.get("registered_at"), "logical_date": manifest.get("logical_date"),
            "code_version": manifest.get("code_version"), "metrics": manifest["metrics"],
            "parity": manifest["parity"], "gate": manifest["gate"]["summary"],
            "report": registry.version_uri(version) + "report.html",
            "artifacts": {k: v["sha256"] for k, v in manifest["artifacts"].items()}}


def _rollback_text(result: dict[str, Any]) -> str:
    head = ("would roll back" if result["dry_run"] else "rolled back") + f" {result['from']} -> {result['to']}"
    return head + "\n" + "\n".join(f"    {k}: {d['from']!r} -> {d['to']!r}" for k, d in result["diff"].items())


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
