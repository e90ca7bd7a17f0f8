"""gxfast's patches change no result: the same suite on the same rows gives the same validation result
(passing and failing expectations, row conditions, mostly, aggregates, integer ranges with nulls and
strict bounds) with and without them; only the batch fingerprint may be given instead of hashed."""

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
        "dwell_ms": pd.array([None, 5, 0, None, 90_000, -1], dtype="Int64"),
    })
    instances = [
        Instance("columns", "", "expect_table_columns_to_match_ordered_list",
                 {"column_list": ["tenant_id", "position", "event_type", "event_id", "dwell_ms"]}, "block"),
        Instance("types", "", "expect_column_values_to_be_of_type", {"column": "position", "type_": "int32"}, "block"),
        Instance("ids", "", "expect_column_values_to_not_be_null", {"column": "event_id"}, "block"),
        Instance("event_type_allowed", "", "expect_column_values_to_be_in_set",
                 {"column": "event_type", "value_set": ["impression", "click", "dwell"]}, "block"),
        Instance("position_range", "tenant=acme", "expect_column_values_to_be_between",
                 {"column": "position", "min_value": 1, "max_value": 200, "row_condition": "tenant_id == 'acme'",
                  "condition_parser": "pandas"}, "block"),
        Instance("dwell_range", "", "expect_column_values_to_be_between",
                 {"column": "dwell_ms", "min_value": 0, "max_value": 90_000, "strict_max": True}, "block"),
        Instance("dwell_floor", "", "expect_column_values_to_be_between", {"column": "dwell_ms", "min_value": 0,
                                                                          "strict_min": True, "mostly": 0.5}, "block"),
        Instance("position_cap", "", "expect_column_values_to_be_between", {"column": "position", "max_value": 7.5},
                 "block"),
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
        "dwell_range": False, "dwell_floor": True, "position_cap": False, "unique": True, "tenants": False,
        "volume": False}
    dwell = next(r for r in memo["results"] if r["expectation_config"]["meta"]["check"] == "dwell_range")
    assert dwell["result"]["unexpected_count"] == 2 and dwell["result"]["partial_unexpected_list"] == [90_000, -1]


def test_a_given_fingerprint_replaces_the_hash_of_every_cell_and_nothing_else():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    frame = pd.DataFrame({"event_id": pd.array(["e1", "e2", "e2"], dtype="str")})
    instances = [Instance("unique", "", "expect_column_values_to_be_unique", {"column": "event_id"}, "block")]
    assert gxfast.install()
    hashed = _validate(frame, instances)
    marked = _validate(gxfast.fingerprint(frame.copy(), {"events/k-1.parquet": '"etag-1"'}), instances)
    digest = marked["meta"]["batch_markers"].pop("pandas_data_fingerprint")
    assert digest.startswith("objects:") and digest.endswith(":3")
    assert digest != hashed["meta"]["batch_markers"].pop("pandas_data_fingerprint")
    assert marked == hashed  # the same result apart from the fingerprint
    other = gxfast.fingerprint(frame.copy(), {"events/k-1.parquet": '"etag-2"'}).attrs
    assert other["feedloop_fingerprint"] != digest  # other bytes, another fingerprint
