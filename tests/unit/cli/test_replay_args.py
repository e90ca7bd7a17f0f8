"""`feedloop ingest replay` and `simulate`: a bad argument is exit 2 with a message naming it, never a traceback.

Never a traceback: argparse's type function refuses the value, so the command exits 2 (usage) with
"argument --start-time: ..." naming the rule, before it loads settings or touches Kafka and S3.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.core import utc
from feedloop.ops.cli import build_parser
from feedloop.ops.cli_args import UsageError
from feedloop.ops.cli_output import EXIT_USAGE


def parse(start: str):
    return build_parser().parse_args(["ingest", "replay", "--start-time", start, "--end-time", "2026-11-20T01:00"])


@pytest.mark.parametrize("value, says", [
    pytest.param("0001-01-01T00:00+01:00", "between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z",
                 id="year-1-with-an-offset-overflowed"),
    pytest.param("9999-12-31T23:59-01:00", "between 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z",
                 id="year-9999-with-an-offset-overflowed"),
    pytest.param("2026-13-01T00:00", "month must be in 1..12", id="month-13"),
    pytest.param("yesterday", "not a date-time", id="not-a-date"),
])
def test_a_bad_time_is_a_usage_error_naming_the_argument_and_the_rule(value, says):
    with pytest.raises(UsageError) as err:
        parse(value)
    assert err.value.code == EXIT_USAGE
    assert "argument --start-time:" in err.value.message and says in err.value.message, err.value.message


def test_the_reproduced_command_exits_2_with_the_message_and_no_traceback():
    done = subprocess.run([sys.executable, "-m", "feedloop.ops.cli", "ingest", "replay", "--start-time",
                           "0001-01-01T00:00+01:00", "--end-time", "2026-01-01T00:00"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "argument --start-time: '0001-01-01T00:00+01:00'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(
    st.text(max_size=40),
    st.builds("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}{}".format, st.integers(0, 9999), st.integers(0, 99),
              st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
              st.sampled_from(["", "Z", "+00:00", "+01:00", "-23:59", "+24:00", "+99:99"])),
    st.datetimes().map(lambda d: d.isoformat()),
))
def test_any_start_time_text_parses_to_utc_in_range_or_is_a_usage_error(value):
    try:
        args = parse(value)
    except UsageError as err:
        assert err.code == EXIT_USAGE and "argument --start-time" in err.message
    else:
        assert args.start_time.tzinfo == timezone.utc and utc.MIN <= args.start_time < utc.MAX


@pytest.mark.parametrize("flag", ["--partition", "--start-offset", "--end-offset"])
@pytest.mark.parametrize("value", ["-5", "1.5", "ten"])
def test_a_negative_or_non_integer_offset_is_a_usage_error_naming_the_flag(flag, value):
    argv = {"--partition": "0", "--start-offset": "0", "--end-offset": "10", flag: value}
    with pytest.raises(UsageError) as err:
        build_parser().parse_args(["ingest", "replay", *[x for kv in argv.items() for x in kv]])
    assert f"argument {flag}: {value!r} is not a whole number >= 0" in err.value.message, err.value.message


def test_simulate_recommend_without_pods_exits_2_naming_via_serving():
    done = subprocess.run([sys.executable, "-m", "feedloop.ops.cli", "simulate", "--recommend", "--days", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--recommend asks the serving pods for lists; give them with --via-serving" in done.stderr
    assert "Traceback" not in done.stderr
