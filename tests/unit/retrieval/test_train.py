"""Training is deterministic for a seed, lowers the loss, and learns the tiny world's tastes."""

from __future__ import annotations

import numpy as np

from feedloop.retrieval.train import train
from tests.unit.retrieval import tiny


def test_the_same_positives_and_seed_give_the_same_parameters():
    first = train(tiny.positives(), tiny.catalog(), tiny.CONFIG)
    second = train(tiny.positives(), tiny.catalog(), tiny.CONFIG)
    assert first.params.keys() == second.params.keys()
    assert all(np.array_equal(first.params[k], second.params[k]) for k in first.params)
    assert first.epoch_losses == second.epoch_losses


def test_another_seed_gives_other_parameters():
    first = train(tiny.positives(), tiny.catalog(), tiny.CONFIG)
    other = train(tiny.positives(), tiny.catalog(), tiny.CONFIG.model_copy(update={"seed": 4}))
    assert not np.array_equal(first.params["item_emb"], other.params["item_emb"])


def test_a_user_is_closest_to_the_topic_they_engaged_with():
    model = train(tiny.positives(), tiny.catalog(), tiny.CONFIG.model_copy(update={"epochs": 40}))
    acme = [f"i{k:02d}" for k in range(8)]
    scores = model.query_vectors(["u0", "u1", "u2"]) @ model.item_vectors(acme).T
    for user, row in enumerate(scores):
        top = [acme[k] for k in np.argsort(-row)[:2]]
        assert all(int(i[1:]) % 3 == user for i in top), (user, top)
    assert model.epoch_losses[-1] < model.epoch_losses[0]
