from __future__ import annotations

from collections import Counter
from datetime import date

import orjson
import pytest

from feedloop.contract import events as ev
from feedloop.core.config import load_settings
from feedloop.ops.simulate import SimulationReport, Simulator


def _run(seed=3, days=2, events_per_day=6000):
    settings = load_settings(environ={})
    sim = Simulator(settings, start=date(2026, 11, 1), days=days, events_per_day=events_per_day, seed=seed)
    report = SimulationReport(start=date(2026, 11, 1), days=days)
    return sim, list(sim.records(report)), report


@pytest.fixture(scope="module")
def run():
    return _run()


def test_same_seed_gives_the_same_traffic(run):
    _, records, _ = run
    _, again, _ = _run()
    assert [r.value for r in records] == [r.value for r in again]
    _, other, _ = _run(seed=4)
    assert [r.value for r in records] != [r.value for r in other]


def test_every_event_meets_the_contract_and_ids_are_unique(run):
    _, records, report = run
    batch = ev.decode_batch([r.value for r in records])
    assert not batch.rejected
    assert batch.table.num_rows == report.events == len(records)
    assert len(set(batch.table.column("event_id").to_pylist())) == len(records)


def test_records_arrive_in_order_and_never_before_their_event(run):
    _, records, _ = run
    arrivals = [r.arrival_ms for r in records]
    assert arrivals == sorted(arrivals)
    for r in records[:2000]:
        event_ms = int(ev.parse_ts(orjson.loads(r.value)["event_ts"]).timestamp() * 1000)
        assert r.arrival_ms > event_ms


def test_volume_mix_and_late_share_follow_the_settings(run):
    _, records, report = run
    assert 0.8 * 12000 <= report.events <= 1.2 * 12000
    assert 0.02 <= report.exploration_requests / report.requests <= 0.09
    assert 0.003 <= report.late_events / report.events <= 0.02
    kinds = Counter(orjson.loads(r.value)["event_type"] for r in records)
    assert set(kinds) >= {"impression", "click", "dwell", "like"}
    assert kinds["click"] == kinds["dwell"]


def test_every_outcome_follows_an_impression_of_the_same_request_and_item(run):
    _, records, _ = run
    shown = {}
    for r in records:
        e = orjson.loads(r.value)
        if e["event_type"] == "impression":
            shown[(e["request_id"], e["item_id"])] = e["event_ts"]
    for r in records:
        e = orjson.loads(r.value)
        if e["event_type"] != "impression":
            assert e["event_ts"] > shown[(e["request_id"], e["item_id"])]


def test_clicks_show_position_bias_and_follow_the_hidden_utility(run):
    sim, records, _ = run
    impressions, clicks = Counter(), Counter()
    for r in records:
        e = orjson.loads(r.value)
        if e["event_type"] == "impression":
            impressions[e["position"]] += 1
        elif e["event_type"] == "click":
            clicks[e["position"]] += 1
    ctr = {p: clicks[p] / impressions[p] for p in impressions}
    assert ctr[1] > 2 * ctr[10]
    # Same user, same positions: higher-utility items get more clicks.
    import numpy as np

    world = sim.world
    u = 0
    items = np.flatnonzero(world.item_tenant == world.user_tenant[u])
    util = world.utility(u, items)
    assert util.max() - util.min() > 2.0
