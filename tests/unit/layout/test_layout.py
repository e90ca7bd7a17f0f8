"""Every lake and models-bucket key, exactly as written, and the parser that reads object keys back.

Why exact: these keys are the storage format. A key that changes shape orphans everything already
written under the old one (a replay would write a second copy instead of overwriting), and a
parser that misreads one rebuilds the wrong chunk.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedloop.core import layout as lake
from feedloop.core.layout import HourPartition, ObjectRef
from feedloop.core.pointer import CasPointer
from feedloop.promotion.registry import MANIFEST, Registry
from tests.unit.ingest.fakestore import FakeStore

TOPICS = st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True)  # Kafka's legal topic names
PARTITIONS = st.integers(0, 2**31 - 1)
OFFSETS = st.integers(0, 2**63 - 1)  # a Kafka offset is an int64
GENERATIONS = st.integers(0, 10**6)
HOURS = st.builds(HourPartition, st.dates(date(2000, 1, 1), date(2099, 12, 31)), st.integers(0, 23))
VERSIONS = st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True)
UTC_TIMES = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(timezone.utc))

HOUR = HourPartition(date(2026, 11, 20), 3)
START = "00000000000000001000"


@pytest.mark.parametrize("key,expected", [
    pytest.param(HOUR.prefix, "events/engagement/dt=2026-11-20/hour=03/", id="hour-prefix-zero-padded"),
    pytest.param(lake.day_prefix(date(2026, 1, 5)), "events/engagement/dt=2026-01-05/", id="day-prefix"),
    pytest.param(lake.object_name("engagement", 3, 1000), f"engagement+3+{START}.parquet", id="object-first-log"),
    pytest.param(lake.object_name("engagement", 3, 1000, 2), f"engagement+3+{START}.g2.parquet",
                 id="object-after-a-reset"),
    pytest.param(lake.object_name("engagement", 0, 2**63 - 1), "engagement+0+09223372036854775807.parquet",
                 id="object-largest-offset"),
    pytest.param(lake.events_key(HOUR, "engagement", 3, 1000),
                 f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.parquet", id="events-key"),
    pytest.param(lake.deadletter_key(date(2026, 11, 20), "engagement", 3, 1000, 1),
                 f"deadletter/engagement/dt=2026-11-20/engagement+3+{START}.g1.parquet", id="deadletter-key"),
    pytest.param(lake.checkpoint_key("engagement", 7), "_ingest/engagement/checkpoints/engagement+7.json",
                 id="checkpoint-key"),
    pytest.param(lake.run_manifest_key("scheduled__2026-11-20T03:00:00+00:00"),
                 "_ingest/engagement/runs/scheduled__2026-11-20T03_00_00_00_00.json", id="run-manifest-airflow-id"),
    pytest.param(lake.run_manifest_key("manual__20261120T030405123456Z"),
                 "_ingest/engagement/runs/manual__20261120T030405123456Z.json", id="run-manifest-cli-id"),
    pytest.param(lake.run_manifest_key("../../checkpoints/x"), "_ingest/engagement/runs/.._.._checkpoints_x.json",
                 id="run-manifest-cannot-leave-runs"),
    pytest.param(lake.ingest_audit_prefix(), "_ingest/engagement/audit/", id="audit-prefix"),
    pytest.param(lake.ingest_audit_key(datetime(2026, 11, 20, 3, 4, 5, 6, tzinfo=timezone.utc), "engagement", 2),
                 "_ingest/engagement/audit/20261120T030405000006Z+engagement+2.json", id="audit-key"),
    pytest.param(lake.dataset_prefix(date(2026, 11, 20)), "datasets/ranker/2026-11-20/", id="dataset-prefix"),
    pytest.param(lake.version_key("2026-11-20-0123456789"), "ranker/versions/2026-11-20-0123456789/",
                 id="version-folder"),
    pytest.param(lake.version_key("2026-11-20-0123456789", "model.onnx"),
                 "ranker/versions/2026-11-20-0123456789/model.onnx", id="version-file"),
    pytest.param(lake.version_uri("feedloop-models", "2026-11-20-0123456789"),
                 "s3://feedloop-models/ranker/versions/2026-11-20-0123456789/", id="version-uri"),
    pytest.param(lake.RANKER_LIVE_KEY, "ranker/live.json", id="live-pointer"),
    pytest.param(lake.CATALOG_ITEMS_KEY, "catalog/items/items.parquet", id="item-catalog"),
])
def test_every_key_has_its_documented_shape(key, expected):
    assert key == expected


def test_the_live_key_the_alerts_read_is_the_one_the_registry_pointer_writes():
    assert CasPointer(FakeStore(), "feedloop-models", lake.RANKER_PREFIX).key == lake.RANKER_LIVE_KEY


@pytest.mark.parametrize("ts,hour", [
    pytest.param(datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc), HourPartition(date(2026, 11, 20), 3),
                 id="on-the-hour"),
    pytest.param(datetime(2026, 11, 20, 3, 59, 59, 999_999, tzinfo=timezone.utc),
                 HourPartition(date(2026, 11, 20), 3), id="last-microsecond-of-the-hour"),
    pytest.param(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc), HourPartition(date(2026, 12, 31), 23),
                 id="last-hour-of-the-year"),
])
def test_an_instant_belongs_to_the_hour_partition_it_falls_in(ts, hour):
    assert HourPartition.of(ts) == hour


def test_an_events_key_parses_to_its_topic_partition_chunk_hour_and_generation():
    key = f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.g2.parquet"

    assert lake.parse_key(key) == ObjectRef(key, "engagement", 3, 1000, HOUR, 2)


def test_a_deadletter_key_parses_with_no_hour():
    key = f"deadletter/engagement/dt=2026-11-20/engagement+3+{START}.parquet"

    assert lake.parse_key(key) == ObjectRef(key, "engagement", 3, 1000, None, 0)


@pytest.mark.parametrize("key", [
    pytest.param("_ingest/engagement/checkpoints/engagement+3.json", id="checkpoint"),
    pytest.param("_ingest/engagement/runs/manual__20261120T030405123456Z.json", id="run-manifest"),
    pytest.param("validation/dt=2026-11-20/hour=03/result.json", id="validation-result"),
    pytest.param("events/engagement/dt=2026-11-20/hour=03/engagement+3+1000.parquet", id="offset-not-padded"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+3+0{START}.parquet", id="offset-21-digits"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+{START}.parquet", id="no-partition"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+-3+{START}.parquet", id="negative-partition"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/+3+{START}.parquet", id="no-topic"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.g.parquet", id="generation-empty"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.G2.parquet", id="generation-upper"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.parquet.tmp", id="temp-file"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=03/engagement+3+{START}.json", id="not-parquet"),
    pytest.param("events/engagement/dt=2026-11-20/hour=03/", id="a-folder"),
    pytest.param(f"events/engagement/dt=2026-13-45/hour=03/engagement+3+{START}.parquet", id="impossible-date"),
    pytest.param(f"events/engagement/dt=2026-11-20/hour=99/engagement+3+{START}.parquet", id="hour-99"),
])
def test_a_key_that_is_not_a_chunk_object_is_refused(key):
    assert lake.parse_key(key) is None


@settings(max_examples=300)
@given(hour=HOURS, topic=TOPICS, partition=PARTITIONS, start=OFFSETS, generation=GENERATIONS)
def test_every_events_key_parses_back_to_what_named_it(hour, topic, partition, start, generation):
    key = lake.events_key(hour, topic, partition, start, generation)

    assert lake.parse_key(key) == ObjectRef(key, topic, partition, start, hour, generation)
    assert key.startswith(hour.prefix) and hour.prefix.startswith(lake.day_prefix(hour.day))


@settings(max_examples=300)
@given(day=st.dates(date(2000, 1, 1), date(2099, 12, 31)), topic=TOPICS, partition=PARTITIONS, start=OFFSETS,
       generation=GENERATIONS)
def test_every_deadletter_key_parses_back_to_what_named_it(day, topic, partition, start, generation):
    key = lake.deadletter_key(day, topic, partition, start, generation)

    assert lake.parse_key(key) == ObjectRef(key, topic, partition, start, None, generation)


@given(topic=TOPICS, partition=PARTITIONS, generation=GENERATIONS, starts=st.tuples(OFFSETS, OFFSETS))
def test_object_names_sort_in_offset_order(topic, partition, generation, starts):
    a, b = (lake.object_name(topic, partition, s, generation) for s in starts)

    assert (a < b) == (starts[0] < starts[1]) and (a == b) == (starts[0] == starts[1])


@given(a=HOURS, b=HOURS)
def test_hour_prefixes_sort_in_time_order(a, b):
    assert (a.prefix < b.prefix) == (a < b)


@given(run_id=st.text(max_size=80))
def test_any_run_id_gives_one_manifest_directly_under_runs(run_id):
    key = lake.run_manifest_key(run_id)
    name = key.removeprefix("_ingest/engagement/runs/")

    assert name != key and name.endswith(".json") and "/" not in name


@given(at=st.tuples(UTC_TIMES, UTC_TIMES), topic=TOPICS, partition=PARTITIONS)
def test_audit_records_of_one_partition_sort_by_time(at, topic, partition):
    first, second = (lake.ingest_audit_key(t, topic, partition) for t in at)

    assert (first < second) == (at[0] < at[1])


@settings(max_examples=50, deadline=None)
@given(versions=st.sets(VERSIONS.filter(lambda v: v != "unfinished"), max_size=6))
def test_the_registry_lists_exactly_the_versions_whose_manifest_key_it_wrote(versions):
    store = FakeStore()
    registry = Registry(store, "feedloop-models")
    for version in versions:
        store.put_json("feedloop-models", lake.version_key(version, MANIFEST), {})
        store.put("feedloop-models", lake.version_key(version, "model.txt"), b"m")
    store.put("feedloop-models", lake.version_key("unfinished", "model.txt"), b"m")  # no manifest: not registered
    store.put("feedloop-models", lake.version_key("nested/deeper", MANIFEST), b"{}")  # not a version folder

    assert registry.versions() == sorted(versions)

