"""The impression buffer is bounded in bytes as well as events, with the bytes estimated without encoding.

Why: with only an event bound, 20,000 events of a megabyte each would have been 20 GB in a pod.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from feedloop.core.config import KafkaSettings, ServingSettings
from feedloop.serving.impressions import ImpressionLog, ServedList


def _served(n: int, *, query: str | None = None, item: str = "acme-i{}", author: str | None = "acme-a1",
            retriever: str | None = None) -> ServedList:
    return ServedList(request_id="req-1", tenant_id="acme", user_id="acme-u001", surface="search", device="web",
                      query=query, ts_ms=1_796_385_600_000, logged_ms=1_796_385_600_000, model_version="2026-12-04-ab12",
                      explore=False, item_ids=[item.format(i) for i in range(n)], author_ids=[author] * n,
                      retriever_version=retriever)


@pytest.mark.parametrize("served", [
    pytest.param(_served(1), id="one-item"),
    pytest.param(_served(1000), id="1000-items"),
    pytest.param(_served(20, query="q" * 512, author=None), id="long-query-no-authors"),
    pytest.param(_served(20, item="é\u2603\U0001F600\x00\"{}"), id="non-ascii-and-escaped-ids"),
    pytest.param(_served(1, retriever="2026-12-04-cd34"), id="recommended-list-with-its-retriever"),
])
def test_wire_bytes_bounds_the_real_record_from_above_and_closely(served):
    real = len(served.record())
    assert real <= served.wire_bytes() <= real + 64


def test_a_list_beyond_the_byte_bound_is_dropped_and_counted_even_when_the_event_bound_has_room():
    cfg = ServingSettings(impression_buffer=20_000, impression_buffer_bytes=1_048_576)
    log = ImpressionLog(KafkaSettings(), cfg)  # not started: nothing leaves the buffer
    before = REGISTRY.get_sample_value("feedloop_impressions_dropped_total", {"reason": "buffer_full"}) or 0.0
    big = _served(500, query="q" * 400_000)  # ~415 KB: two fit in 1 MiB, a third does not
    assert log.submit(big) and log.submit(big)
    assert not log.submit(big)
    assert big.wire_bytes() > 400_000 and log.pending() == 1000
    after = REGISTRY.get_sample_value("feedloop_impressions_dropped_total", {"reason": "buffer_full"})
    assert after - before == 500
