"""A cursor for another thread reads its database in UTC, as the connection does: the time zone is a setting of each
DuckDB connection (a plain cursor takes the default zone), and dates and epochs must not depend on the machine."""

from __future__ import annotations

from feedloop.core import duck
from feedloop.core.config import load_settings


def test_a_cursor_is_in_utc_whatever_the_default_zone(tmp_path) -> None:
    con = duck.connect(load_settings(), temp_dir=tmp_path / "duckdb")
    con.execute("CREATE TABLE t AS SELECT TIMESTAMPTZ '2026-12-08 02:30:00+00' AS ts")
    con.execute("SET GLOBAL TimeZone = 'America/New_York'")   # new connections' default: a machine in New York
    plain, other = con.cursor(), duck.cursor(con)
    assert str(plain.execute("SELECT ts::DATE FROM t").fetchone()[0]) == "2026-12-07"   # what it guards against
    assert str(other.execute("SELECT ts::DATE FROM t").fetchone()[0]) == "2026-12-08"
    assert str(con.execute("SELECT ts::DATE FROM t").fetchone()[0]) == "2026-12-08"
    for c in (plain, other, con):
        c.close()
