"""duck.utc_day equals DuckDB's own CAST(... AS DATE) in UTC, around midnights, before 1970 and far ahead."""

from __future__ import annotations

import duckdb

from feedloop.core.duck import utc_day


def test_utc_day_equals_the_cast_at_every_edge() -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""CREATE TABLE t AS SELECT TIMESTAMPTZ '1969-12-31 00:00:00+00' + to_microseconds(us) AS ts
                   FROM (SELECT unnest([-86400000001, -86400000000, -1, 0, 1, 86399999999, 86400000000,
                                        86400000001, 172800000000 - 1]) AS us
                         UNION ALL SELECT (random() * 4e17)::BIGINT - 1e17::BIGINT FROM range(20000))""")
    differ = con.execute(f"SELECT count(*) FROM t WHERE {utc_day('ts')} <> CAST(ts AS DATE)").fetchone()[0]
    days = con.execute(f"SELECT count(DISTINCT {utc_day('ts')}) FROM t").fetchone()[0]
    assert differ == 0 and days > 1000
