"""Failure text (observed vs expected) from GX results (the alerts' own tests: tests/unit/alerts/)."""

from __future__ import annotations

from great_expectations.core import ExpectationValidationResult
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from feedloop.quality.report import data_docs, failure, failure_line, plain_values, verdict_message


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


def test_numpy_observed_values_render_in_the_data_docs_page(caplog):
    """GX formats an observed value with repr(): numpy 2's "np.float64(...)" broke the cell (logged error)."""
    import numpy as np
    from great_expectations.core import ExpectationSuiteValidationResult

    evr = ExpectationValidationResult(
        success=True, result={"observed_value": np.float64(0.0833), "details": {"seen": np.array([np.int64(3)])}},
        expectation_config=ExpectationConfiguration(type="expect_column_max_to_be_between",
                                                    kwargs={"column": "ctr@acme/feed", "max_value": 0.5}))
    suite = plain_values(ExpectationSuiteValidationResult(success=True, results=[evr], suite_name="engagement_hour"))
    assert type(suite.results[0].result["observed_value"]) is float and suite.results[0].result["details"] == {
        "seen": [3]}
    page = data_docs(suite)
    assert "0.0833" in page and "ctr@acme/feed" in page
    assert not [r for r in caplog.records if "data docs rendering" in r.getMessage()]


def test_the_basic_result_format_carries_what_alerts_and_data_docs_show():
    """The runner validates with BASIC (cheaper than SUMMARY): a failing row check still has its failing-row
    count and example values, in the alert line and on the Data Docs page."""
    import os

    import great_expectations as gx
    import pandas as pd

    from feedloop.quality.suites import Instance, build_suite

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    frame = pd.DataFrame({"event_type": pd.array(["impression"] * 8 + ["bogus", "weird"], dtype="str")})
    suite = build_suite("engagement_hour", [Instance(
        "event_type_allowed", "", "expect_column_values_to_be_in_set",
        {"column": "event_type", "value_set": ["impression", "click"]}, "block")])
    batch = (gx.get_context(mode="ephemeral").data_sources.add_pandas("s").add_dataframe_asset("a")
             .add_batch_definition_whole_dataframe("b").get_batch(batch_parameters={"dataframe": frame}))
    result = plain_values(batch.validate(suite, result_format="BASIC"))
    line = failure_line(failure("dt=2026-11-05/hour=22", result.results[0]))
    assert line.endswith("observed 2 of 10 rows unexpected (20.00%), e.g. ['bogus', 'weird']"), line
    page = data_docs(result)
    assert "bogus" in page and "weird" in page
