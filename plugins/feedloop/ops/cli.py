"""The `feedloop` command: the embedded stack, the traffic simulator, ingest, models, data status and the demo.

Exit codes: 0 ok, 1 error, 2 usage, 3 a check failed (a quarantined partition, a blocked promotion).
`-o json` (before or after the subcommand) writes exactly one JSON document to stdout — the result,
or {"error": ..., "exit_code": N} — and everything else (logs, progress, child processes) to stderr.
Progress bars are drawn only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, TextIO, get_args

import orjson

from feedloop.core import utc
from feedloop.ops.cli_data import add_data_parser
from feedloop.ops.cli_model import add_model_parser
from feedloop.core.config import Traffic, load_settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED = 0, 1, 2, 3
_LOGGED: list[str] = []  # what this invocation told the operator on stderr (the last line names an error)


def _log(msg: str) -> None:
    _LOGGED.append(msg)
    print(msg, file=sys.stderr, flush=True)


def _emit(args: argparse.Namespace, payload: Any, text: Callable[[], str]) -> None:
    if args.output == "json":
        out = getattr(args, "stdout", sys.stdout)
        out.write(orjson.dumps(payload, default=_jsonable, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
        out.flush()
        args.emitted = True
    else:
        print(text())


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (date, Path)):
        return str(obj)
    raise TypeError(type(obj).__name__)


def cmd_stack(args: argparse.Namespace) -> int:
    from feedloop.ops import stack
    from feedloop.ops.stack.production import running_profile

    settings = load_settings()
    # down / status act on the profile that is running unless one is named
    profile = args.profile or (args.action != "up" and running_profile(settings)) or settings.stack.profile
    settings = settings.model_copy(update={"stack": settings.stack.model_copy(update={"profile": profile})})
    echo = _log if args.output == "json" else print
    if args.action == "up":
        result = stack.up(settings, echo=echo)
    elif args.action == "down":
        stack.down(settings, echo=echo)
        result = stack.status(settings)
    else:
        result = stack.status(settings)
    _emit(args, [dataclasses.asdict(s) for s in result], lambda: _status_text(result))
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
    from feedloop.ops import simulate

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
    )
    _emit(args, report, lambda: (
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
    from feedloop.ingest import replay, reset, sink

    settings = load_settings()
    if args.action == "reset-checkpoint":
        import getpass
        import socket

        record = reset.reset_checkpoint(settings, partition=args.partition, to=args.to, reason=args.reason,
                                        by=f"cli {getpass.getuser()}@{socket.gethostname()}")
        _emit(args, record, lambda: (
            f"{record.topic}[{record.partition}]: checkpoint reset from next_offset {record.before['next_offset']:,} "
            f"to {record.after['next_offset']:,} (log generation {record.after['generation']}); "
            f"recorded in s3://{settings.s3.lake_bucket}/{record.audit_key}"))
        return EXIT_OK
    if args.action == "audit":
        trail = reset.audit_trail(settings)
        _emit(args, trail, lambda: "\n".join(
            f"{r['at']}  {r['topic']}[{r['partition']}]  {r['before']['next_offset']:,} -> "
            f"{r['after']['next_offset']:,}  by {r['by']}: {r['reason']}" for r in trail) or "no checkpoint resets")
        return EXIT_OK
    if args.action == "run":
        report = sink.run(settings, run_id=args.run_id)
        _emit(args, report, lambda: (
            f"ingested {report.records:,} records ({report.deadletters:,} dead letters) into {len(report.objects)} "
            f"objects over {len(report.hours)} hour partitions; stopped on {report.stop_reason}"))
        return EXIT_OK
    if args.start_time and args.end_time:
        result = replay.replay_time(settings, start=args.start_time, end=args.end_time)
    elif args.partition is not None and args.start_offset is not None and args.end_offset is not None:
        result = replay.replay_offsets(settings, partition=args.partition, start=args.start_offset,
                                       end=args.end_offset)
    else:
        _log("feedloop ingest replay: give --start-time and --end-time, or --partition, --start-offset and --end-offset")
        return EXIT_USAGE
    _emit(args, result, lambda: (
        f"replayed {len(result.chunks)} chunk(s), {result.records:,} records: {len(result.unchanged)} objects "
        f"identical, {len(result.changed)} changed, {len(result.created)} created"
        + (f", {len(result.raced)} left to a concurrent sink run" if result.raced else "")
        + (f", {len(result.gone)} chunk(s) left as they are (retention deleted their records)" if result.gone else "")
        + (f", {len(result.other_log)} object(s) of a log before a checkpoint reset left alone"
           if result.other_log else "")))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from feedloop.serving import pods

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
            _log(f"serving pod on port {port} stopped by {stop}")
        code = EXIT_OK
    urls = [f"http://{host}:{port + i}" for i in range(replicas)]  # the pods served until stopped (SIGTERM, Ctrl-C)
    _emit(args, {"stopped": urls, "workers": workers, "exit_code": code}, lambda: f"stopped {', '.join(urls)}")
    return code


class _Stopped(Exception):
    """A foreground server was asked to stop (SIGTERM, Ctrl-C): its normal end."""


def _stopped(signum: int, _frame: Any) -> NoReturn:
    raise _Stopped(signal.Signals(signum).name)


def cmd_demo(args: argparse.Namespace) -> int:
    from feedloop.ops import demo

    summary = demo.run(load_settings(), days=args.days, seed=args.seed, echo=_log if args.output == "json" else print)
    _emit(args, summary, lambda: "")
    return EXIT_OK


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return number


def _urls(value: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        raise argparse.ArgumentTypeError(f"{value!r}: expected http(s) URLs separated by commas, "
                                         "e.g. http://127.0.0.1:8000,http://127.0.0.1:8001")
    return urls


def _datetime(value: str) -> datetime:
    try:
        return utc.parse_typed(value)
    except utc.TimestampError as exc:  # argparse exits 2 naming the argument; never a traceback
        raise argparse.ArgumentTypeError(str(exc)) from None


class UsageError(SystemExit):
    """A command line argparse refused: exit 2 as argparse's own, carrying the message so -o json can report it."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message


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
    sim.add_argument("--start", type=_date, help="first simulated day (default: DAYS days before today)")
    sim.add_argument("--days", type=int, help="number of days (default from config)")
    sim.add_argument("--events-per-day", type=int, help="approximate events per day (default from config)")
    sim.add_argument("--seed", type=int, help="random seed (default from config)")
    sim.add_argument("--traffic", choices=get_args(Traffic),
                     help="bursty: heavy-tailed and empty hours, day CTRs up to 40 %% apart, late events up to 48 h "
                          "(default simulate.traffic)")
    sim.add_argument("--ground-truth", type=Path, help="write the hidden ground truth to this JSON file")
    sim.add_argument("--via-serving", type=_urls, metavar="URL[,URL...]",
                     help="closed loop: feeds come from these serving pods (round-robin), which log the impressions; "
                          "the legacy policy while they have no model (503)")
    sim.set_defaults(func=cmd_simulate)

    ing = sub.add_parser("ingest", help="run the Kafka -> S3 sink once, replay a range, or reset a checkpoint")
    ing_sub = ing.add_subparsers(dest="action", required=True)
    ing_run = ing_sub.add_parser("run", help="one bounded sink run (what the ingest_engagement DAG does)")
    ing_run.add_argument("--run-id", help="name of the run manifest (default: manual__<time>)")
    rep = ing_sub.add_parser("replay", help="rebuild the objects of a time range or an offset range")
    rep.add_argument("--start-time", type=_datetime, help="first event hour, UTC (e.g. 2026-11-20T00:00)")
    rep.add_argument("--end-time", type=_datetime, help="end of the range, exclusive")
    rep.add_argument("--partition", type=_non_negative)
    rep.add_argument("--start-offset", type=_non_negative)
    rep.add_argument("--end-offset", type=_non_negative, help="exclusive")
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
    dm.add_argument("--days", type=_positive, help="simulated days (default simulate.days)")
    dm.add_argument("--seed", type=int, help="the simulated world's seed (default simulate.seed); another days or "
                                              "seed than the stack ran with needs `make clean`")
    dm.set_defaults(func=cmd_demo)

    add_model_parser(sub)
    add_data_parser(sub)
    _output_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _LOGGED.clear()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _log(exc.message)
        if _wants_json(argv):
            sys.stdout.write(orjson.dumps({"error": exc.message.splitlines()[-1], "exit_code": EXIT_USAGE}).decode()
                             + "\n")
        raise
    with _stdout(args.output) as args.stdout:
        args.emitted = False
        code = _run(args)
        if args.output == "json" and not args.emitted:  # failed before its result: the error is the document
            _emit(args, {"error": _LOGGED[-1] if _LOGGED else f"exit code {code}", "exit_code": code}, str)
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
        _log(f"feedloop: {exc}")
        return code or EXIT_ERROR


def _exit_code(exc: Exception) -> int | None:
    """3 for a failed check, 1 for an error an operator can act on from one line, None for a bug."""
    from pydantic import ValidationError

    from feedloop.ops.airflow_api import AirflowApiError
    from feedloop.ingest.sink import IngestError
    from feedloop.core.errors import PromotionBlocked
    from feedloop.quality import ValidationFailed, WindowNotReady
    from feedloop.serving.client import RankingError
    from feedloop.promotion.registry import RegistryError
    from feedloop.ops.stack import StackError

    if isinstance(exc, (PromotionBlocked, ValidationFailed, WindowNotReady)):
        return EXIT_CHECK_FAILED
    if isinstance(exc, (StackError, ValidationError, IngestError, RankingError, RegistryError, AirflowApiError)):
        return EXIT_ERROR
    return None


def _wants_json(argv: list[str]) -> bool:
    return any(a in ("-ojson", "--output=json") or (a in ("-o", "--output") and nxt == "json")
               for a, nxt in zip(argv, [*argv[1:], ""]))


@contextmanager
def _stdout(output: str) -> Iterator[TextIO]:
    """Where results go. In JSON mode Python's prints go to stderr while the command runs and, when
    stdout is the process's fd 1, fd 1 itself points at stderr too, so libraries and child processes
    cannot add to it; the JSON document goes to the saved stdout (or to the stream a caller put there)."""
    if output != "json":
        yield sys.stdout
        return
    target = sys.stdout
    try:
        real = target.fileno() == 1
    except (AttributeError, OSError, ValueError):  # an in-process caller's stream (e.g. a test's capture)
        real = False
    target.flush()
    saved = os.dup(1) if real else None
    sys.stdout = sys.stderr
    try:
        if saved is None:
            yield target
        else:
            os.dup2(2, 1)
            with os.fdopen(os.dup(saved), "w") as out:
                yield out
    finally:
        sys.stdout = target
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


if __name__ == "__main__":  # python -m feedloop.ops.cli: run the imported module, the one cli_model and cli_data use
    from feedloop.ops.cli import main as package_main

    sys.exit(package_main())
