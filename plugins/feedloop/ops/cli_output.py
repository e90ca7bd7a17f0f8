"""What every `feedloop` command shares: exit codes, stderr logging, and one JSON document on stdout.

Why a module of its own: the command groups (cli, cli_data, cli_model) all report the same way, and
none of them should import another to do so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import orjson

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED = 0, 1, 2, 3
LOGGED: list[str] = []  # what this invocation told the operator on stderr (the last line names an error)


def log(msg: str) -> None:
    LOGGED.append(msg)
    print(msg, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, payload: Any, text: Callable[[], str]) -> None:
    if args.output == "json":
        out = getattr(args, "stdout", sys.stdout)
        out.write(orjson.dumps(payload, default=jsonable, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
        out.flush()
        args.emitted = True
    else:
        print(text())


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (date, Path)):
        return str(obj)
    raise TypeError(type(obj).__name__)


def wants_json(argv: list[str]) -> bool:
    return any(a in ("-ojson", "--output=json") or (a in ("-o", "--output") and nxt == "json")
               for a, nxt in zip(argv, [*argv[1:], ""]))


@contextmanager
def result_stream(output: str) -> Iterator[TextIO]:
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
