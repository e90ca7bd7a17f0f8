"""GX Data Docs, readable under the sandbox they are served in (see feedloop.ops.ui.headers).

Why: GX's pages take their styling and status icons from CDNs (Bootstrap, Font Awesome) and their
filters from scripts; the sandbox lets none of that in, so the expectations would read as unstyled
tables with an empty status column. Our own stylesheet goes inline into each page as it is served:
the same content, with passed / failed written out where the icons were.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

STYLESHEET = Path(__file__).parent / "static" / "data-docs.css"


def readable(page: bytes) -> bytes:
    """The page with our stylesheet last in its head (so it wins), or first if it has no head."""
    style = b"<style>" + _stylesheet() + b"</style>"
    head, end, rest = page.partition(b"</head>")
    return head + style + end + rest if end else style + page


@lru_cache(maxsize=1)
def _stylesheet() -> bytes:
    return STYLESHEET.read_bytes()
