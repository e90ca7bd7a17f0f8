"""The `feedloop` command: the embedded stack, the traffic simulator, ingest, models, data status, the catalog's
embeddings and the demo.

Exit codes: 0 ok, 1 error, 2 usage, 3 a check failed (a quarantined partition, a blocked promotion).
`-o json` (before or after the subcommand) writes exactly one JSON document to stdout — the result,
or {"error": ..., "exit_code": N} — and everything else (logs, progress, child processes) to stderr.
Progress bars are drawn only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, get_args

import orjson

from feedloop.ops.cli_args import (UsageError, datetime_arg, day_arg, non_negative_arg, positive_arg,
                                   urls_arg)
from feedloop.ops.cli_catalog import add_catalog_parser
from feedloop.ops.cli_data import add_data_parser
from feedloop.ops.cli_model import add_model_parser
from feedloop.core.config import Traffic, load_settings
from feedloop.ops.cli_output import (EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_OK, EXIT_USAGE, LOGGED, emit, log,
                                     result_stream, wants_json)

def cmd_stack(args: argparse.Namespace) -> int:
    from feedloop.ops import stack  # lazy: a command loads only its own subsystem
    from feedloop.ops.stack.production import running_profile  # lazy: a command loads only its own subsystem

    settings = load_settings()
    # down / status act on the profile that is running unless one is named
    profile = args.profile or (args.action != "up" and running_profile(settings)) or settings.stack.profile
    settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"profile": profile})})
    echo = log if args.output == "json" else print
    if args.action == "up":
        result = stack.up(settings, echo=echo)
    elif args.action == "down":
        stack.down(settings, echo=echo)
        result = stack.status(settings)
    else:
        result = stack.status(settings)
    emit(args, [dataclasses.asdict(s) for s in result], lambda: _status_text(result))
    if args.action == "status" and not all(s.ready for s in result):
        return EXIT_ERROR
    return EXIT_OK


def _status_text(result) -> str:
    lines = []
    for s in result:
        state = "ready" if s.ready else ("running, not ready" if s.running else "stopped")
        pid = f" pid {s.pid}" if s.pid else ""
        lines.append(f"{s.title:<22} {state}{pid}")
        lines.extend(f"    {key:<10} {value}" for key, value in s.details.items())
        lines.append(f"    {'log':<10} {s.log}")
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    from feedloop.ops import simulate  # lazy: a command loads only its own subsystem

    if args.recommend and not args.via_serving:
        log("feedloop simulate: --recommend asks the serving pods for lists; give them with --via-serving URL[,URL...]")
        return EXIT_USAGE
    settings = load_settings()
    if args.traffic:
        traffic = settings.simulate.model_copy(update={"traffic": args.traffic})
        settings = settings.model_copy(update={"simulate": traffic})
    cfg = settings.simulate
    start = args.start or (datetime.now(timezone.utc).date() - timedelta(days=args.days or cfg.days))
    report = simulate.run(
        settings,
        start=start,
        days=args.days or cfg.days,
        events_per_day=args.events_per_day or cfg.events_per_day,
        seed=args.seed,
        ground_truth=args.ground_truth,
        serving_urls=args.via_serving,
        recommend=args.recommend,
    )
    emit(args, report, lambda: (
        f"simulated {report.days} day(s) of {cfg.traffic} traffic from {report.start}: {report.events:,} events in "
        f"{report.requests:,} requests ({report.exploration_requests:,} exploration, {report.late_events:,} late) -> "
        f"topic {settings.kafka.topic} in {report.seconds:.1f}s ({report.events_per_s:,.0f} events/s)\n"
        f"    by type: " + ", ".join(f"{k}={v:,}" for k, v in sorted(report.by_type.items()))
        + (f"\n    impressions logged by the pods: {report.pod_impressions:,} "
           f"({report.pod_impressions_dropped:,} dropped)" if args.via_serving else "")
        + "\n" + "\n".join("    " + line for line in simulate.day_table(list(report.per_day.values())))
    ))
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from feedloop.ingest import replay, reset, sink  # lazy: a command loads only its own subsystem

    settings = load_settings()
    if args.action == "reset-checkpoint":
        import getpass
        import socket

        record = reset.reset_checkpoint(settings, partition=args.partition, to=args.to, reason=args.reason,
                                        by=f"cli {getpass.getuser()}@{socket.gethostname()}")
        emit(args, record, lambda: (
            f"{record.topic}[{record.partition}]: checkpoint reset from next_offset {record.before['next_offset']:,} "
            f"to {record.after['next_offset']:,} (log generation {record.after['generation']}); "
            f"recorded in s3://{settings.s3.lake_bucket}/{record.audit_key}"))
        return EXIT_OK
    if args.action == "audit":
        trail = reset.audit_trail(settings)
        emit(args, trail, lambda: "\n".join(
            f"{r['at']}  {r['topic']}[{r['partition']}]  {r['before']['next_offset']:,} -> "
            f"{r['after']['next_offset']:,}  by {r['by']}: {r['reason']}" for r in trail) or "no checkpoint resets")
        return EXIT_OK
    if args.action == "run":
        report = sink.run(settings, run_id=args.run_id)
        emit(args, report, lambda: (
            f"ingested {report.records:,} records ({report.deadletters:,} dead letters) into {len(report.objects)} "
            f"objects over {len(report.hours)} hour partitions; stopped on {report.stop_reason}"))
        return EXIT_OK
    if args.start_time and args.end_time:
        result = replay.replay_time(settings, start=args.start_time, end=args.end_time)
    elif args.partition is not None and args.start_offset is not None and args.end_offset is not None:
        result = replay.replay_offsets(settings, partition=args.partition, start=args.start_offset,
                                       end=args.end_offset)
    else:
        log("feedloop ingest replay: give --start-time and --end-time, or --partition, --start-offset and --end-offset")
        return EXIT_USAGE
    emit(args, result, lambda: (
        f"replayed {len(result.chunks)} chunk(s), {result.records:,} records: {len(result.unchanged)} objects "
        f"identical, {len(result.changed)} changed, {len(result.created)} created"
        + (f", {len(result.raced)} left to a concurrent sink run" if result.raced else "")
        + (f", {len(result.gone)} chunk(s) left as they are (retention deleted their records)" if result.gone else "")
        + (f", {len(result.other_log)} object(s) of a log before a checkpoint reset left alone"
           if result.other_log else "")))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from feedloop.serving import pods  # lazy: a command loads only its own subsystem

    settings = load_settings()
    cfg = settings.serving
    host, port = args.host or cfg.host, args.port or cfg.port
    workers, replicas = args.workers or cfg.workers, args.replicas or cfg.replicas
    if replicas > 1:
        code = pods.run_replicas(settings, host=host, port=port, workers=workers, replicas=replicas)
    else:
        # uvicorn re-raises the SIGTERM / SIGINT it shut down on; with this handler that ends the call
        # instead of the process, so the pod's stop is reported like any other result
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stopped)
        try:
            pods.run_pod(settings, host=host, port=port, workers=workers)
        except _Stopped as stop:
            log(f"serving pod on port {port} stopped by {stop}")
        code = EXIT_OK
    urls = [f"http://{host}:{port + i}" for i in range(replicas)]  # the pods served until stopped (SIGTERM, Ctrl-C)
    emit(args, {"stopped": urls, "workers": workers, "exit_code": code}, lambda: f"stopped {', '.join(urls)}")
    return code


class _Stopped(Exception):
    """A foreground server was asked to stop (SIGTERM, Ctrl-C): its normal end."""


def _stopped(signum: int, _frame: Any) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


def cmd_demo(args: argparse.Namespace) -> int:
    from feedloop.ops import demo  # lazy: a command loads only its own subsystem

    summary = demo.run(load_settings(), days=args.days, seed=args.seed, echo=log if args.output == "json" else print)
    emit(args, summary, lambda: "")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


def _output_everywhere(parser: argparse.ArgumentParser) -> None:
    """`-o json` after any subcommand too (`feedloop model list -o json`); SUPPRESS keeps an earlier one."""
    for action in parser._actions:  # argparse keeps subcommands here; no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("-o", "--output", choices=("text", "json"), default=argparse.SUPPRESS,
                                 help="output format (json: one JSON document on stdout, logs on stderr)")
                _output_everywhere(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="feedloop", description=__doc__.splitlines()[0],
                     epilog="exit codes: 0 ok, 1 error, 2 usage, 3 a check failed (quarantined partition, "
                            "blocked promotion)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="output format (json: one JSON document on stdout, logs on stderr)")
    sub = parser.add_subparsers(dest="command", required=True)

    st = sub.add_parser("stack", help="start, stop or inspect the embedded S3, Kafka and Airflow")
    st.add_argument("action", choices=("up", "down", "status"))
    st.add_argument("--profile", choices=("embedded", "production"),
                    help="embedded: airflow standalone on SQLite; production: PostgreSQL + CeleryExecutor + Redis, "
                         "one process per component (default: stack.profile, or the running one for down/status)")
    st.set_defaults(func=cmd_stack)

    sim = sub.add_parser("simulate", help="produce synthetic engagement traffic to Kafka")
    sim.add_argument("--start", type=day_arg, help="first simulated day (default: DAYS days before today)")
    sim.add_argument("--days", type=int, help="number of days (default from config)")
    sim.add_argument("--events-per-day", type=int, help="approximate events per day (default from config)")
    sim.add_argument("--seed", type=int, help="random seed (default from config)")
    sim.add_argument("--traffic", choices=get_args(Traffic),
                     help="bursty: heavy-tailed and empty hours, day CTRs up to 40 %% apart, late events up to 48 h "
                          "(default simulate.traffic)")
    sim.add_argument("--ground-truth", type=Path, help="write the hidden ground truth to this JSON file")
    sim.add_argument("--via-serving", type=urls_arg, metavar="URL[,URL...]",
                     help="closed loop: feeds come from these serving pods (round-robin), which log the impressions; "
                          "the legacy policy while they have no model (503)")
    sim.add_argument("--recommend", action="store_true",
                     help="with --via-serving: simulate.recommend_share of the requests ask POST /recommend (the pods "
                          "choose from the whole catalog), the rest POST /rank; the table judges both against each "
                          "user's best items of the catalog")
    sim.set_defaults(func=cmd_simulate)

    ing = sub.add_parser("ingest", help="run the Kafka -> S3 sink once, replay a range, or reset a checkpoint")
    ing_sub = ing.add_subparsers(dest="action", required=True)
    ing_run = ing_sub.add_parser("run", help="one bounded sink run (what the ingest_engagement DAG does)")
    ing_run.add_argument("--run-id", help="name of the run manifest (default: manual__<time>)")
    rep = ing_sub.add_parser("replay", help="rebuild the objects of a time range or an offset range")
    rep.add_argument("--start-time", type=datetime_arg, help="first event hour, UTC (e.g. 2026-11-20T00:00)")
    rep.add_argument("--end-time", type=datetime_arg, help="end of the range, exclusive")
    rep.add_argument("--partition", type=non_negative_arg)
    rep.add_argument("--start-offset", type=non_negative_arg)
    rep.add_argument("--end-offset", type=non_negative_arg, help="exclusive")
    rc = ing_sub.add_parser("reset-checkpoint", help="point a partition's checkpoint at its Kafka log again after "
                                                     "the log was reset, recreated or trimmed (recorded in the audit)")
    rc.add_argument("--partition", type=int, required=True)
    rc.add_argument("--to", required=True, metavar="earliest|OFFSET",
                    help="the log's first offset, or an offset in the log; offsets before it are never landed")
    rc.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    ing_sub.add_parser("audit", help="every checkpoint reset: when, who, why, from and to")
    ing.set_defaults(func=cmd_ingest)

    sv = sub.add_parser("serve", help="run ranking pods that follow the live model pointer (FastAPI + onnxruntime)")
    sv.add_argument("--host", help="listen address (default serving.host)")
    sv.add_argument("--port", type=int, help="port of the first pod (default serving.port)")
    sv.add_argument("--workers", type=int, help="uvicorn worker processes per pod (default serving.workers)")
    sv.add_argument("--replicas", type=int, help="pods on port, port+1, ... (default serving.replicas)")
    sv.set_defaults(func=cmd_serve)

    dm = sub.add_parser("demo", help="start the stack and run the platform end to end on simulated traffic")
    dm.add_argument("--days", type=positive_arg, help="simulated days (default simulate.days)")
    dm.add_argument("--seed", type=int, help="the simulated world's seed (default simulate.seed); another days or "
                                              "seed than the stack ran with needs `make clean`")
    dm.set_defaults(func=cmd_demo)

    add_model_parser(sub)
    add_data_parser(sub)
    add_catalog_parser(sub)
    _output_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    LOGGED.clear()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        log(exc.message)
        if wants_json(argv):
            sys.stdout.write(orjson.dumps({"error": exc.message.splitlines()[-1], "exit_code": EXIT_USAGE}).decode()
                             + "\n")
        raise
    with result_stream(args.output) as args.stdout:
        args.emitted = False
        code = _run(args)
        if args.output == "json" and not args.emitted:  # failed before its result: the error is the document
            emit(args, {"error": LOGGED[-1] if LOGGED else f"exit code {code}", "exit_code": code}, str)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - one clear line for operators, not a traceback
        code = _exit_code(exc)
        if code is None and args.output != "json":
            raise
        if code is None:
            traceback.print_exc()
        log(f"feedloop: {exc}")
        return code or EXIT_ERROR


def _exit_code(exc: Exception) -> int | None:
    """3 for a failed check, 1 for an error an operator can act on from one line, None for a bug.

    The error classes are imported here, when a command failed: their modules load GX, pyarrow or boto3,
    which `feedloop --help` and a successful command of another group never need.
    """
    from pydantic import ValidationError

    from feedloop.ops.airflow_api import AirflowApiError  # lazy: a command loads only its own subsystem
    from feedloop.ingest.sink import IngestError  # lazy: a command loads only its own subsystem
    from feedloop.core.errors import PromotionBlocked  # lazy: a command loads only its own subsystem
    from feedloop.quality import ValidationFailed, WindowNotReady  # lazy: a command loads only its own subsystem
    from feedloop.serving.client import RankingError  # lazy: a command loads only its own subsystem
    from feedloop.promotion.pointer_plan import RegistryError  # lazy: a command loads only its own subsystem
    from feedloop.ops.stack import StackError  # lazy: a command loads only its own subsystem

    if isinstance(exc, (PromotionBlocked, ValidationFailed, WindowNotReady)):
        return EXIT_CHECK_FAILED
    if isinstance(exc, (StackError, ValidationError, IngestError, RankingError, RegistryError, AirflowApiError)):
        return EXIT_ERROR
    return None


if __name__ == "__main__":
    sys.exit(main())
