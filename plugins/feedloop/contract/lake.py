"""The Parquet schemas of the lake's objects: the event contract plus where each record came from.

Why a contract: ingest writes these objects, validation, training and replay read them; a column
changes here or nowhere.
"""

from __future__ import annotations

import pyarrow as pa

from feedloop.contract.events import ARROW_SCHEMA

# The Parquet schema of an events object: the contract plus where the record came from.
LAKE_SCHEMA = ARROW_SCHEMA.append(pa.field("kafka_topic", pa.string(), nullable=False)) \
    .append(pa.field("kafka_partition", pa.int32(), nullable=False)) \
    .append(pa.field("kafka_offset", pa.int64(), nullable=False)) \
    .append(pa.field("ingest_ts", pa.timestamp("ms", tz="UTC"), nullable=False))

DEADLETTER_SCHEMA = pa.schema([
    pa.field("kafka_topic", pa.string(), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("ingest_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw", pa.binary(), nullable=False),
])
