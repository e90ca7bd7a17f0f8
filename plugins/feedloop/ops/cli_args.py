"""Argument types of the `feedloop` command: each refuses a bad value with a message naming the rule.

Why: argparse then exits 2 naming the argument, never with a traceback; with `-o json` the message is
the error document.
"""

from __future__ import annotations

import argparse
from datetime import date, datetime

from feedloop.core import utc
from feedloop.ops.cli_output import EXIT_USAGE

def day_arg(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def positive_arg(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


def non_negative_arg(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return number


def urls_arg(value: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        raise argparse.ArgumentTypeError(f"{value!r}: expected http(s) URLs separated by commas, "
                                         "e.g. http://127.0.0.1:8000,http://127.0.0.1:8001")
    return urls


def datetime_arg(value: str) -> datetime:
    try:
        return utc.parse_typed(value)
    except utc.TimestampError as exc:  # argparse exits 2 naming the argument; never a traceback
        raise argparse.ArgumentTypeError(str(exc)) from None


class UsageError(SystemExit):
    """A command line argparse refused: exit 2 as argparse's own, carrying the message so -o json can report it."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message
