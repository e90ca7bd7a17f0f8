"""Impression-list records: the sink's vectorised expansion gives exactly the events a pod used to send one by one."""

from __future__ import annotations

import orjson
import pytest

from feedloop.contract import impression_lists
from feedloop.contract.events import check_event, events_to_table


def _record(n: int = 3, **overrides) -> dict:
    raw = impression_lists.encode(
        request_id="req-7", event_ts="2026-12-04T10:00:00.123Z", tenant_id="acme", user_id="acme-u1", surface="search",
        device="web", query="shoes", explore=True, model_version="2026-12-03-ab12",
        item_ids=[f"acme-i{i}" for i in range(n)], author_ids=[f"acme-a{i}" if i % 2 else None for i in range(n)])
    return {**orjson.loads(raw), **overrides}


def test_a_record_expands_into_one_valid_impression_event_per_item_in_display_order():
    events = impression_lists.to_events(_record(3))
    assert [(e["position"], e["item_id"], e["author_id"], e["event_id"]) for e in events] == [
        (1, "acme-i0", "unknown", "req-7-p001-impression"), (2, "acme-i1", "acme-a1", "req-7-p002-impression"),
        (3, "acme-i2", "unknown", "req-7-p003-impression")]
    assert all(not check_event(e) and e["explore"] is True and e["model_version"] == "2026-12-03-ab12" for e in events)


def test_the_vectorised_expansion_equals_the_events_table_of_several_lists():
    records = [_record(3), _record(1, request_id="req-8", explore=False, query=None), _record(1000, request_id="r9")]
    table, parent = impression_lists.expand(records)
    assert table.equals(events_to_table([e for r in records for e in impression_lists.to_events(r)]))
    assert parent.tolist() == [0, 0, 0, 1] + [2] * 1000


def test_plain_events_and_other_json_are_not_list_records():
    assert impression_lists.parse(b'{"event_id": "e1", "record_type": "something_else"}') is None
    assert impression_lists.parse(b'{"event_id": "e1", "query": "\\"record_type\\""}') is None
    assert impression_lists.parse(b'not json "record_type"') is None
    assert impression_lists.parse(orjson.dumps(_record(2)))["items"] == ["acme-i0", "acme-i1"]


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"items": []}, "items: expected a non-empty list"),
    ({"items": "acme-i0"}, "items: expected a non-empty list"),
    ({"authors": ["a"]}, "authors: expected a list of 3 author ids"),
    ({"items": ["acme-i0", "", "acme-i2"]}, "items[1]: expected a non-empty string"),
    ({"authors": ["a", 5, "b"]}, "authors[1]: expected a non-empty string"),
    ({"surface": "tv"}, "surface: 'tv' is not allowed"),
    ({"event_ts": "2026-12-04 10:00"}, "event_ts:"),
    ({"schema_version": 2}, "schema_version: expected 1"),
    ({"user_id": None}, "user_id: missing"),
])
def test_a_broken_list_names_what_is_wrong(overrides, problem):
    assert problem in impression_lists.problems(_record(3, **overrides))


def test_a_good_list_has_no_problems():
    assert impression_lists.problems(_record(3)) == ""


def test_decoding_a_mixed_block_keeps_input_order_and_rejects_a_broken_list_whole():
    plain = impression_lists.to_events(_record(1, request_id="plain"))[0] | {"event_id": "plain-1"}
    raws = [orjson.dumps(plain), orjson.dumps(_record(3)), b"not json", orjson.dumps(_record(2, surface="tv")),
            orjson.dumps(_record(2, request_id="req-9")), orjson.dumps(plain | {"event_id": "plain-2"})]
    decoded = impression_lists.decode_records(raws)
    assert decoded.table.column("event_id").to_pylist() == [
        "plain-1", "req-7-p001-impression", "req-7-p002-impression", "req-7-p003-impression",
        "req-9-p001-impression", "req-9-p002-impression", "plain-2"]
    assert decoded.kept.to_pylist() == [0, 1, 1, 1, 4, 4, 5]  # a list's rows share its record (its offset)
    assert [r.index for r in decoded.rejected] == [2, 3]
    assert decoded.rejected[1].reason.startswith("impression list: surface: 'tv' is not allowed")


def test_a_block_of_plain_events_decodes_exactly_as_before():
    from feedloop.contract.events import decode_batch

    raws = [orjson.dumps(e | {"event_id": f"e{i}"}) for i, e in enumerate(impression_lists.to_events(_record(5)))]
    ours, theirs = impression_lists.decode_records(raws), decode_batch(raws)
    assert ours.table.equals(theirs.table) and ours.kept.equals(theirs.kept) and ours.rejected == theirs.rejected


def test_a_recommended_lists_retriever_version_is_carried_and_the_sink_expands_it_as_any_list():
    raw = impression_lists.encode(
        request_id="req-9", event_ts="2026-12-04T10:00:00.123Z", tenant_id="acme", user_id="acme-u1", surface="feed",
        device="ios", query=None, explore=False, model_version="2026-12-03-ab12", item_ids=["acme-i0", "acme-i1"],
        author_ids=["acme-a0", None], retriever_version="2026-12-03-cd34")
    record = impression_lists.parse(raw)
    assert record["retriever_version"] == "2026-12-03-cd34" and not impression_lists.problems(record)
    without = {k: v for k, v in record.items() if k != "retriever_version"}
    assert impression_lists.expand([record])[0].equals(impression_lists.expand([without])[0])
    assert "retriever_version" not in _record(2)  # a /rank list's record is unchanged
