"""Data Docs served under the sandbox get our stylesheet inline, last in the head so it wins."""

from __future__ import annotations

from feedloop.ops.ui import datadocs


def test_the_stylesheet_goes_last_in_the_head():
    page = b"<html><head><style>gx</style></head><body><i class='fas fa-times'></i></body></html>"
    served = datadocs.readable(page)
    head, _, body = served.partition(b"</head>")
    assert head.startswith(b"<html><head><style>gx</style><style>") and b"fa-times::before" in head
    assert body == b"<body><i class='fas fa-times'></i></body></html>"


def test_a_page_without_a_head_gets_it_first():
    assert datadocs.readable(b"<p>hi</p>").endswith(b"</style><p>hi</p>")


def test_the_stylesheet_has_no_way_out_of_the_page():
    css = datadocs.STYLESHEET.read_text()
    assert "url(" not in css and "@import" not in css and "</style" not in css
