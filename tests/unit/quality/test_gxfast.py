"""The Expectation.configuration memo changes no result: the same suite on the same rows gives the same
validation result (passing and failing expectations, row conditions, mostly, aggregates) with and without it."""

from __future__ import annotations

import os

import pandas as pd

from feedloop.quality import gxfast
from feedloop.quality.suites import Instance, build_suite


def _validate(frame: pd.DataFrame, instances: list[Instance]) -> dict:
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    batch = (context.data_sources.add_pandas("s").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
             .get_batch(batch_parameters={"dataframe": frame}))
    result = batch.validate(build_suite("t", instances), result_format="SUMMARY").to_json_dict()
    result["meta"]["batch_markers"].pop("ge_load_time")
    result.pop("id", None)
    return result


def test_results_are_the_same_with_and_without_the_memo():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    frame = pd.DataFrame({
        "tenant_id": pd.array(["acme", "acme", "globex", "initech", "umbrella", "acme"], dtype="str"),
        "position": pd.array([1, 2, 0, 7, 3, 250], dtype="Int32"),
        "event_type": pd.array(["impression", "click", "bogus", "impression", "impression", "dwell"], dtype="str"),
        "event_id": pd.array(["e1", "e2", "e2", "e4", "e5", "e6"], dtype="str"),
    })
    instances = [
        Instance("columns", "", "expect_table_columns_to_match_ordered_list",
                 {"column_list": ["tenant_id", "position", "event_type", "event_id"]}, "block"),
        Instance("types", "", "expect_column_values_to_be_of_type", {"column": "position", "type_": "int32"}, "block"),
        Instance("ids", "", "expect_column_values_to_not_be_null", {"column": "event_id"}, "block"),
        Instance("event_type_allowed", "", "expect_column_values_to_be_in_set",
                 {"column": "event_type", "value_set": ["impression", "click", "dwell"]}, "block"),
        Instance("position_range", "tenant=acme", "expect_column_values_to_be_between",
                 {"column": "position", "min_value": 1, "max_value": 200, "row_condition": "tenant_id == 'acme'",
                  "condition_parser": "pandas"}, "block"),
        Instance("unique", "", "expect_column_values_to_be_unique", {"column": "event_id", "mostly": 0.5}, "warn"),
        Instance("tenants", "", "expect_column_values_to_be_in_set",
                 {"column": "tenant_id", "value_set": ["acme", "globex", "initech"], "mostly": 0.9}, "warn"),
        Instance("volume", "tenant=acme", "expect_table_row_count_to_be_between",
                 {"min_value": 5, "max_value": 9, "row_condition": "tenant_id == 'acme'", "condition_parser": "pandas"},
                 "warn"),
    ]
    assert gxfast.install() and gxfast.install()  # idempotent
    with gxfast.disabled():
        plain = _validate(frame, instances)
    memo = _validate(frame, instances)
    assert memo == plain
    assert {r["expectation_config"]["meta"]["check"]: r["success"] for r in memo["results"]} == {
        "columns": True, "types": True, "ids": True, "event_type_allowed": False, "position_range": False,
        "unique": True, "tenants": False, "volume": False}
