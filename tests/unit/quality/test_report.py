"""Failure text (observed vs expected) from GX results (the alerts' own tests: tests/unit/alerts/)."""

from __future__ import annotations

from great_expectations.core import ExpectationValidationResult
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from feedloop.quality.report import failure, failure_line, verdict_message


def _result(type_, kwargs, result, meta=None):
    cfg = ExpectationConfiguration(type=type_, kwargs=kwargs, meta=meta or {})
    return ExpectationValidationResult(success=False, expectation_config=cfg, result=result)


def test_a_row_level_failure_names_counts_and_examples():
    import numpy as np

    r = _result("expect_column_values_to_be_between",
                {"column": "position", "min_value": 1, "max_value": 200, "row_condition": "x", "condition_parser": "pandas"},
                {"element_count": 1000, "unexpected_count": 3, "unexpected_percent": 0.3,
                 "partial_unexpected_list": [np.int32(0), np.int32(0), np.int32(0)]},
                {"check": "position_range", "scope": "tenant=acme"})
    f = failure("dt=2026-11-05/hour=22", r, docs="rows")
    assert (f["column"], f["failing_rows"], f["docs"]) == ("position", 3, "rows")
    assert failure_line(f) == ("dt=2026-11-05/hour=22 position_range [tenant=acme]: "
                               "expect_column_values_to_be_between(position) expected min_value=1, max_value=200; "
                               "observed 3 of 1000 rows unexpected (0.30%), e.g. [0, 0, 0]")


def test_an_aggregate_failure_shows_the_observed_value():
    r = _result("expect_table_row_count_to_be_between", {"min_value": 100, "max_value": 301},
                {"observed_value": 56}, {"check": "volume", "scope": "tenant=globex"})
    assert failure("p", r)["observed"] == "56" and failure("p", r)["expected"] == "min_value=100, max_value=301"


def test_the_verdict_lists_every_failure_and_the_report():
    f = {"partition": "dt=2026-11-05/hour=22", "check": "volume", "scope": "", "expectation": "e",
         "expected": "min_value=1", "observed": "0"}
    summary = {"day": "2026-11-05", "day_failures": [],
               "hours": {"22": {"state": "failed", "failures": [f]}, "23": {"state": "passed", "failures": []}}}
    text = verdict_message(summary, "s3://lake/validation/dt=2026-11-05/index.html", "http://x/index.html")
    assert text.splitlines() == [
        "Validation of 2026-11-05 failed: 1 of 2 hour partition(s) quarantined.",
        "- dt=2026-11-05/hour=22 volume: e expected min_value=1; observed 0",
        "Report: s3://lake/validation/dt=2026-11-05/index.html (http://x/index.html)",
    ]
