"""Deterministic Parquet bytes: the same rows always give the same bytes (replays compare equal)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(table: pa.Table, *, zstd_level: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table.combine_chunks(), buf, compression="zstd", compression_level=zstd_level,
                   row_group_size=1 << 20)
    return buf.getvalue()


def read_parquet(body: bytes, schema: pa.Schema) -> pa.Table:
    return pq.read_table(io.BytesIO(body), schema=schema)
