"""`feedloop model ...`: list and show registered versions, the pointer history, roll back, run a canary.

Why the CLI goes through feedloop.promotion.pointer_change / feedloop.promotion.registry: a rollback from a
terminal is the same compare-and-swap as the DAG's, so it cannot race a promotion into a torn pointer.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import Any, Callable

from feedloop.core.config import load_settings
from feedloop.ops.cli_output import EXIT_ERROR, EXIT_OK, EXIT_USAGE, emit, log

KINDS = ("ranker", "retriever")  # feedloop.core.layout's model kinds, by name


def add_model_parser(sub: Any) -> None:
    """Register the `model` command group on the top-level subparsers."""
    model = sub.add_parser("model", help="registered ranker (and retriever) versions, the live pointer, rollback, "
                                         "canary")
    actions = model.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every registered version, oldest first; * marks the live one, "
                                              "the canary column the canary's share of users")
    show = actions.add_parser("show", help="one version: metrics, gate decision, artifacts")
    show.add_argument("version")
    history = actions.add_parser("history", help="every pointer flip: when, old -> new, who, why")
    rb = actions.add_parser("rollback", help="point live.json back (compare-and-swap)")
    for parser in (listing, history, rb):
        parser.add_argument("--kind", choices=KINDS, default="ranker",
                            help="which model's registry: the ranker (default) or the two-tower retriever")
    rb.add_argument("--to", help="target version (default: the previous live version)")
    rb.add_argument("--reason", help="why (recorded in the pointer and its history; required unless --dry-run)")
    rb.add_argument("--dry-run", action="store_true", help="print the pointer diff, change nothing")
    canary = actions.add_parser("canary", help="serve VERSION to PERCENT of users (start, or ramp the running one)")
    canary.add_argument("version")
    canary.add_argument("--percent", type=_percent, required=True, help="share of users, in (0, 100]")
    promote = actions.add_parser("promote-canary", help="make the running canary the live version")
    abort = actions.add_parser("abort-canary", help="stop the canary: everyone back on the live version")
    for parser in (canary, promote, abort):
        parser.add_argument("--reason", help="why (recorded in the pointer and its history; required unless --dry-run)")
        parser.add_argument("--dry-run", action="store_true", help="print the pointer diff, change nothing")
    model.set_defaults(func=cmd_model)


def _percent(value: str) -> float:
    problem = argparse.ArgumentTypeError(f"{value!r} is not a percent in (0, 100]")
    try:
        percent = float(value)
    except ValueError:
        raise problem from None
    if not 0 < percent <= 100:  # also refuses nan
        raise problem
    return percent


def cmd_model(args: argparse.Namespace) -> int:
    from feedloop.promotion.pointer_plan import RegistryError  # lazy: a command loads only its own subsystem
    from feedloop.promotion.registry import Registry  # lazy: a command loads only its own subsystem

    from feedloop.core import layout  # lazy: a command loads only its own subsystem

    settings = load_settings()
    retriever = getattr(args, "kind", "ranker") == "retriever"
    registry = Registry.from_settings(settings, layout.RETRIEVER if retriever else layout.RANKER)
    try:
        if args.action == "list" and retriever:
            rows = _list_retrievers(registry)
            emit(args, rows, lambda: _table(rows, ("live", "version", "held_out", "estimate", "recall",
                                                   "popularity", "promoted")))
        elif args.action == "list":
            rows = _list(registry)
            columns = ("live", "canary", "version", "registered_at", "auc", "ndcg@10", "promotable")
            emit(args, rows, lambda: _table([{**r, "canary": _pct(r["canary"])} for r in rows], columns))
        elif args.action == "show":
            shown = _show(registry, args.version)
            emit(args, shown, lambda: "\n".join(f"{k:<14} {v}" for k, v in shown.items()))
        elif args.action == "history":
            from feedloop.promotion.registry import entries  # lazy: a command loads only its own subsystem

            rows = entries(registry.history())
            text_rows = [{**r, "canary": r["canary"] and f"{r['canary']} @ {_pct(r['canary_percent'])}"} for r in rows]
            emit(args, rows, lambda: _table(text_rows, ("seq", "at", "from", "to", "canary", "action", "by",
                                                         "reason")))
        else:
            problems = _pointer_change_problems(args)
            if problems:
                log(f"feedloop model {args.action}: " + "; ".join(problems) + "; nothing was changed")
                return EXIT_USAGE
            result, text = _change_pointer(args, settings, registry)
            emit(args, result, text)
    except RegistryError as exc:
        log(f"feedloop: {exc}")
        return EXIT_ERROR
    return EXIT_OK


def _pointer_change_problems(args: argparse.Namespace) -> list[str]:
    """The bounds the rollback and canary DAGs and the Models page apply (pointer_plan.pointer_change_problems),
    by flag."""
    from feedloop.promotion.pointer_plan import pointer_change_problems  # lazy: a command loads only its own subsystem

    to, flag = (args.to, "--to") if args.action == "rollback" else (getattr(args, "version", None), "VERSION")
    reason = args.reason if args.reason is not None or not args.dry_run else "(dry run)"
    flags = {"to": flag, "reason": "--reason" if args.reason else "--reason (or --dry-run)"}
    return [f"{flags[field]}: {why}" for field, why in pointer_change_problems(to=to, reason=reason)]


def _change_pointer(args: argparse.Namespace, settings: Any, registry: Any) -> tuple[dict[str, Any], Callable[[], str]]:
    """rollback and the canary actions: the same pointer change as the DAGs and the Models page make (a rollback
    of the retriever too, in its own registry)."""
    from feedloop.promotion.pointer_change import change_pointer  # lazy: a command loads only its own subsystem

    to = args.to if args.action == "rollback" else getattr(args, "version", None)
    result = change_pointer(args.action, to=to, percent=getattr(args, "percent", None),
                            reason=(args.reason or "(dry run)").strip(),
                            by=f"cli {getpass.getuser()}@{socket.gethostname()}", dry_run=args.dry_run,
                            settings=settings, registry=registry).summary()
    text = _rollback_text if args.action == "rollback" else _canary_text
    return result, lambda: text(result)


def _list(registry) -> list[dict[str, Any]]:
    live = registry.live()
    canary = (live.canary if live else None) or {}
    rows = []
    for version in registry.versions():
        manifest = registry.manifest(version)
        rows.append({"live": "*" if live and live.version == version else "",
                     "canary": canary["percent"] if canary.get("version") == version else None, "version": version,
                     "registered_at": manifest.get("registered_at"), "auc": manifest["metrics"].get("auc"),
                     "ndcg@10": manifest["metrics"].get("ndcg@10"), "promotable": manifest["gate"]["promotable"],
                     "uri": registry.version_uri(version)})
    return rows


def _list_retrievers(registry) -> list[dict[str, Any]]:
    """The retriever's versions with the recall@k its gate compared (exposure-weighted or plain)."""
    live = registry.live()
    rows = []
    for version in registry.versions():
        manifest = registry.manifest(version)
        gate = manifest.get("gate") or {}
        rows.append({"live": "*" if live and live.version == version else "", "version": version,
                     "held_out": (manifest.get("window") or [None, None])[1],
                     "estimate": f"{gate.get('estimate', 'engaged')}@{gate.get('k')}", "recall": gate.get("candidate"),
                     "popularity": gate.get("popularity"), "promoted": gate.get("promote"),
                     "uri": registry.version_uri(version)})
    return rows


def _show(registry, version: str) -> dict[str, Any]:
    from feedloop.promotion.pointer_plan import RegistryError  # lazy: a command loads only its own subsystem

    manifest = registry.manifest(version)
    if manifest is None:
        raise RegistryError(f"version {version} is not registered")
    live = registry.live()
    canary = (live.canary if live else None) or {}
    return {"version": version, "uri": registry.version_uri(version), "live": bool(live and live.version == version),
            "canary_percent": canary["percent"] if canary.get("version") == version else None,
            "registered_at": manifest.get("registered_at"), "logical_date": manifest.get("logical_date"),
            "code_version": manifest.get("code_version"), "metrics": manifest["metrics"],
            "parity": manifest["parity"], "gate": manifest["gate"]["summary"],
            "report": registry.version_uri(version) + "report.html",
            "artifacts": {k: v["sha256"] for k, v in manifest["artifacts"].items()}}


def _rollback_text(result: dict[str, Any]) -> str:
    head = ("would roll back" if result["dry_run"] else "rolled back") + f" {result['from']} -> {result['to']}"
    return head + "\n" + _diff_text(result["diff"])


def _canary_text(result: dict[str, Any]) -> str:
    was, canary = result["was"], result["canary"]
    if result["action"] == "promote-canary":
        head = f"promoted canary {result['live']} to live (was {was['live']})"
    elif result["action"] == "abort-canary":
        head = f"aborted canary {was['canary']['version']}; live stays {result['live']}"
    elif was["canary"]:
        head = f"canary {canary['version']}: {_pct(was['canary']['percent'])} -> {_pct(canary['percent'])} of users"
    else:
        head = f"canary {canary['version']} at {_pct(canary['percent'])} of users; live stays {result['live']}"
    return ("dry run, would do: " if result["dry_run"] else "") + head + "\n" + _diff_text(result["diff"])


def _diff_text(diff: dict[str, Any]) -> str:
    return "\n".join(f"    {k}: {d['from']!r} -> {d['to']!r}" for k, d in diff.items())


def _pct(percent: float | None) -> str:
    return "" if percent is None else f"{percent:g}%"


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
