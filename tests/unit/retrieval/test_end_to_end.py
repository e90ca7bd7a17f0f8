"""A small simulated world end to end: positives from its events, towers, index, recall against the truth."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bench.retrieval import START, _midnight, simulate, truth
from feedloop.core.config import Settings
from feedloop.retrieval import evaluate, examples, items
from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.train import train

DAYS = 4


@pytest.fixture(scope="module")
def world():
    base = Settings()
    settings = base.model_copy(update={"simulate": base.simulate.model_copy(update={
        "users": 600, "items": 1200, "authors": 60, "events_per_day": 12_000})})
    sim, events = simulate(settings, DAYS + 1)
    holdout = START + timedelta(days=DAYS)
    after = holdout + timedelta(days=1)
    cut = _midnight(holdout)
    train_pos = examples.positives(events, start=START, end=holdout, cutoff=cut,
                                   event_types=settings.retrieval.positive_events)
    shown = examples.impressions(events, start=START, end=holdout, cutoff=cut)
    hold_pos = examples.positives(events, start=holdout, end=after, cutoff=_midnight(after + timedelta(days=1)),
                                  event_types=settings.retrieval.positive_events)
    catalog = items.from_tables(sim.world.catalog(start=START, ids=sim.ids)).existing(_midnight(after).timestamp())
    return settings, sim, train_pos, shown, hold_pos, catalog


def test_two_tower_recall_of_the_truly_relevant_items_beats_popularity(world):
    settings, sim, train_pos, shown, hold_pos, catalog = world
    # ~5k positives: the bench's epochs and batch (for ~140k) would take a dozen steps in all
    cfg = settings.retrieval.model_copy(update={"epochs": 10, "batch_size": 256, "learning_rate": 0.01})
    model = train(train_pos, catalog, cfg, shown)
    index = TenantIndex.build(model.item_vectors(catalog.item_ids), catalog.item_ids, catalog.tenant_ids,
                              m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
    _, user_tenant = evaluate.engaged(hold_pos)
    relevant = truth(sim, user_tenant, catalog, 20)

    tower = evaluate.score("two-tower", evaluate.retrieve(model.query_vectors, index, user_tenant, 50), relevant,
                           user_tenant, (50,))
    popular = evaluate.score("popularity", evaluate.popularity(train_pos, catalog, user_tenant, 50), relevant,
                             user_tenant, (50,))

    assert tower.users == popular.users > 100
    assert tower.at[50] > 1.3 * popular.at[50], (tower.at, popular.at)  # measured 0.274 vs 0.179
