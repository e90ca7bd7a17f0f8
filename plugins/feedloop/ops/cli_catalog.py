"""`feedloop catalog embed`: bring the item embeddings up to date with the catalog, as the retrain DAG does.

Why in the CLI: after a catalog export (or a change of `content:` settings) an operator can embed the new
items at once instead of waiting for the next retrain; it is the same idempotent call as the DAG's task.
"""

from __future__ import annotations

import argparse
from typing import Any

from feedloop.core.config import load_settings
from feedloop.ops.cli_output import EXIT_OK, emit


def add_catalog_parser(sub: Any) -> None:
    """Register the `catalog` command group on the top-level subparsers."""
    catalog = sub.add_parser("catalog", help="the item catalog in the lake and its text embeddings")
    actions = catalog.add_subparsers(dest="action", required=True)
    actions.add_parser("embed", help="embed the catalog items that are new or whose title / description changed "
                                     "(writes nothing when none did; no catalog: says so, exit 0)")
    catalog.set_defaults(func=cmd_catalog)


def cmd_catalog(args: argparse.Namespace) -> int:
    from feedloop.content.embedder import load_embedder  # lazy: a command loads only its own subsystem
    from feedloop.content.item_embeddings import embed_catalog  # lazy: a command loads only its own subsystem
    from feedloop.core.storage import ObjectStore  # lazy: a command loads only its own subsystem

    settings = load_settings()
    result = embed_catalog(ObjectStore.from_settings(settings), settings.s3.lake_bucket,
                           load_embedder(settings.content))
    emit(args, result, lambda: _text(result))
    return EXIT_OK


def _text(result: Any) -> str:
    if result.status == "no-catalog":
        return "no item catalog in the lake: nothing to embed"
    head = "written" if result.status == "written" else "up to date, nothing written"
    return (f"{result.uri}: {head} ({result.model})\n"
            f"  {result.embedded} embedded, {result.kept} kept, {result.removed} removed, "
            f"{result.skipped_no_text} without text, of {result.catalog_items} catalog rows, in {result.seconds} s")
