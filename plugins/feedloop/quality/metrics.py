"""Aggregates of one hour partition, computed in DuckDB straight from Arrow (no pandas copy).

Why DuckDB: the referential check (every outcome refers to an impression in the window) is a
join, and CTR / volume are group-bys; DuckDB does both over Arrow memory in one pass, and joins
on a 64-bit hash of (request_id, item_id) so the build side stays small at 10M+ events a day.

Why one connection per process: opening a DuckDB database costs 15-30 ms, two per hour, as much as
the queries of a small hour; each call takes a cursor of it (its own registrations, dropped on close).
Why the impression keys first: they are the build side of the orphan check and the next hours'
lookback, so each row's (request_id, item_id) is hashed once, and only outcomes are hashed again.

Why GX gets one row (`HourMetrics.checked`): a check per tenant or per tenant + surface on the long
table needs a pandas row_condition, and GX runs `DataFrame.query` for each (about 14 ms a check on a
12-row frame, 0.5 s an hour at any volume, and it grows with every tenant); with one column per
tenant (`rows@acme`) and per pair (`ctr@acme/feed`) each check reads its own column.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

_KEYS_SQL = "select hash(request_id, item_id) as k from r where event_type = 'impression'"

# Per (tenant_id, surface): the same rows, columns and order as one group-by over the hour with an
# orphan count `k not in (this hour's impression keys + the lookback's)`; hash() is never null, so
# the anti joins count exactly those outcomes.
_METRICS_SQL = """
with counts as (
    select tenant_id, surface,
           count(*)::bigint as rows,
           count(*) filter (where event_type = 'impression')::bigint as impressions,
           count(*) filter (where event_type = 'click')::bigint as clicks,
           count(*) filter (where event_type <> 'impression')::bigint as outcomes,
           count(*) filter (where event_type = 'impression' and position = 1)::bigint as first_position
    from r
    group by all
), orphans as (
    select o.tenant_id, o.surface, count(*)::bigint as orphan_outcomes
    from (select tenant_id, surface, hash(request_id, item_id) as k from r where event_type <> 'impression') o
    anti join keys using (k)
    anti join earlier using (k)
    group by all
)
select c.tenant_id, c.surface, c.rows, c.impressions, c.clicks, c.clicks / nullif(c.impressions, 0) as ctr,
       c.outcomes, coalesce(o.orphan_outcomes, 0)::bigint as orphan_outcomes, c.first_position
from counts c
left join orphans o on c.tenant_id is not distinct from o.tenant_id and c.surface is not distinct from o.surface
order by all
"""


@dataclass(frozen=True)
class HourMetrics:
    table: pa.Table             # per (tenant_id, surface): rows, impressions, clicks, ctr, outcomes, orphan_outcomes,
    #                             first_position (impressions at position 1)
    impression_keys: pa.Table  # k (ubigint) of this hour's impressions, for the next hours' lookback

    def checked(self, tenants: tuple[str, ...], surfaces: tuple[str, ...]) -> Any:
        """The one-row pandas frame the metrics suite checks: hour totals (outcomes, orphan_outcomes,
        impressions, first_position_share), rows@<tenant> per known tenant (0 when absent) and
        ctr@<tenant>/<surface> per known pair (null without impressions)."""
        import pandas as pd

        totals = {"outcomes": 0, "orphan_outcomes": 0, "impressions": 0, "first_position": 0}
        rows = {t: 0 for t in tenants}
        ctr: dict[str, float | None] = {f"{t}/{s}": None for t in tenants for s in surfaces}
        for r in self.table.to_pylist():
            for key in totals:
                totals[key] += r[key]
            if r["tenant_id"] in rows:
                rows[r["tenant_id"]] += r["rows"]
            if f"{r['tenant_id']}/{r['surface']}" in ctr:
                ctr[f"{r['tenant_id']}/{r['surface']}"] = r["ctr"]
        share = totals["first_position"] / totals["impressions"] if totals["impressions"] else None
        row = {"outcomes": totals["outcomes"], "orphan_outcomes": totals["orphan_outcomes"],
               "impressions": totals["impressions"], "first_position_share": share,
               **{column("rows", t): n for t, n in rows.items()},
               **{column("ctr", pair): v for pair, v in ctr.items()}}
        return pd.DataFrame([row]).astype({column("ctr", pair): "float64" for pair in ctr} |
                                          {"first_position_share": "float64"})

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


def column(metric: str, scope: str) -> str:
    """The checked frame's column of one metric for one tenant or tenant/surface: rows@acme, ctr@acme/feed."""
    return f"{metric}@{scope}"


COLUMNS = ("tenant_id", "surface", "event_type", "request_id", "item_id", "position")


def hour_metrics(hour_rows: pa.Table, earlier: list[pa.Table]) -> HourMetrics:
    """Aggregates of `hour_rows` (which must hold COLUMNS); `earlier` holds the impression keys of the
    lookback hours."""
    cur = _cursor()
    try:
        cur.register("r", hour_rows.select(list(COLUMNS)))
        keys = cur.sql(_KEYS_SQL).fetch_arrow_table()
        cur.register("keys", keys)
        cur.register("earlier", pa.concat_tables(earlier) if earlier else pa.table({"k": pa.array([], pa.uint64())}))
        table = cur.sql(_METRICS_SQL).fetch_arrow_table()
    finally:
        cur.close()
    return HourMetrics(table, keys)


def impression_keys(rows: pa.Table) -> pa.Table:
    """k = hash(request_id, item_id) of the impressions in `rows` (the lookback of later hours)."""
    cur = _cursor()
    try:
        cur.register("r", rows.select(["event_type", "request_id", "item_id"]))
        return cur.sql(_KEYS_SQL).fetch_arrow_table()
    finally:
        cur.close()


_lock = threading.Lock()
_con: tuple[int, Any] | None = None  # (pid, connection): a forked child opens its own


def _cursor() -> Any:
    global _con
    import duckdb

    with _lock:
        if _con is None or _con[0] != os.getpid():
            _con = (os.getpid(), duckdb.connect(config={"threads": 2}))
        return _con[1].cursor()
