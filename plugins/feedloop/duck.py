"""DuckDB and Arrow filesystem handles on the object store, configured from feedloop settings.

Why: out-of-core steps (training-set build, validation aggregates) stream Parquet from S3
instead of loading it whole. DuckDB's httpfs extension comes from the PyPI package
duckdb-ext-httpfs (a run-time download fails on machines without internet).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from feedloop.config import Settings


def _keys(settings: Settings) -> tuple[str, str]:
    access = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return access, secret
    return "feedloop", "feedloop"  # a local endpoint without credentials (SeaweedFS accepts any)


def httpfs_extension() -> Path:
    import duckdb
    import duckdb_ext

    root = Path(duckdb_ext.__path__[0]) / "extensions" / f"v{duckdb.__version__}"
    found = sorted(root.glob("*/httpfs.duckdb_extension"))
    if not found:
        raise RuntimeError(f"httpfs for DuckDB {duckdb.__version__} not found under {root}; "
                           "install duckdb-ext-httpfs matching the duckdb version (requirements.txt)")
    return found[0]


def connect(settings: Settings, *, memory_limit: str = "2GB", threads: int = 2, temp_dir: Path | None = None):
    """An in-process DuckDB that reads and writes s3:// on the configured endpoint."""
    import duckdb

    con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit,
                                 "preserve_insertion_order": False})
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{temp_dir}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{httpfs_extension()}'")
    access, secret = _keys(settings)
    endpoint = urlparse(settings.s3.endpoint_url) if settings.s3.endpoint_url else None
    con.execute("SET s3_region = ?", [settings.s3.region])
    con.execute("SET s3_access_key_id = ?", [access])
    con.execute("SET s3_secret_access_key = ?", [secret])
    if endpoint is not None:
        con.execute("SET s3_endpoint = ?", [endpoint.netloc])
        con.execute("SET s3_url_style = 'path'")
        con.execute("SET s3_use_ssl = ?", [endpoint.scheme == "https"])
    return con

