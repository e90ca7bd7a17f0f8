"""Aggregates of one hour partition, computed in DuckDB straight from Arrow (no pandas copy).

Why DuckDB: the referential check (every outcome refers to an impression in the window) is a
join, and CTR / volume are group-bys; DuckDB does both over Arrow memory in one pass, and joins
on a 64-bit hash of (request_id, item_id) so the build side stays small at 10M+ events a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

_METRICS_SQL = """
with ev as (
    select tenant_id, surface, event_type, hash(request_id, item_id) as k from hour_rows
), seen as (
    select k from ev where event_type = 'impression'
    union all
    select k from earlier
)
select tenant_id, surface,
       count(*)::bigint as rows,
       count(*) filter (where event_type = 'impression')::bigint as impressions,
       count(*) filter (where event_type = 'click')::bigint as clicks,
       clicks / nullif(impressions, 0) as ctr,
       count(*) filter (where event_type <> 'impression')::bigint as outcomes,
       count(*) filter (where event_type <> 'impression' and k not in (select k from seen))::bigint as orphan_outcomes
from ev
group by all
order by all
"""


@dataclass(frozen=True)
class HourMetrics:
    table: pa.Table             # per (tenant_id, surface): rows, impressions, clicks, ctr, outcomes, orphan_outcomes
    impression_keys: pa.Table  # k (ubigint) of this hour's impressions, for the next hours' lookback

    def summary(self) -> dict[str, dict[str, int]]:
        """The small numbers kept in the day summary as the baseline for later days."""
        rows: dict[str, int] = {}
        impressions: dict[str, int] = {}
        clicks: dict[str, int] = {}
        for r in self.table.to_pylist():
            tenant = r["tenant_id"] or "<null>"
            rows[tenant] = rows.get(tenant, 0) + r["rows"]
            pair = f"{tenant}/{r['surface']}"
            impressions[pair] = r["impressions"]
            clicks[pair] = r["clicks"]
        return {"rows": rows, "impressions": impressions, "clicks": clicks}


def hour_metrics(hour_rows: pa.Table, earlier: list[pa.Table]) -> HourMetrics:
    """Aggregates of `hour_rows`; `earlier` holds the impression keys of the lookback hours."""
    import duckdb

    con = duckdb.connect(config={"threads": 2})
    try:
        con.register("hour_rows", hour_rows.select(["tenant_id", "surface", "event_type", "request_id", "item_id"]))
        con.register("earlier", pa.concat_tables(earlier) if earlier else pa.table({"k": pa.array([], pa.uint64())}))
        table = con.sql(_METRICS_SQL).fetch_arrow_table()
    finally:
        con.close()
    return HourMetrics(table, impression_keys(hour_rows))


def impression_keys(rows: pa.Table) -> pa.Table:
    """k = hash(request_id, item_id) of the impressions in `rows` (the lookback of later hours)."""
    import duckdb

    con = duckdb.connect(config={"threads": 2})
    try:
        con.register("r", rows.select(["event_type", "request_id", "item_id"]))
        sql = "select hash(request_id, item_id) as k from r where event_type = 'impression'"
        return con.sql(sql).fetch_arrow_table()
    finally:
        con.close()
