"""The simulated items' titles and descriptions: deterministic, and their topic recoverable from the text alone."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from feedloop.content.embedder import load_embedder
from feedloop.core.config import ContentSettings, load_settings
from feedloop.ops.simulate.text import DISTINCT_TOPICS, THEMES, item_text, topic_words
from feedloop.ops.simulate.world import Ids, World


def test_an_items_text_depends_only_on_its_id_and_topic():
    assert item_text("acme-i000001", 3, 12) == item_text("acme-i000001", 3, 12)
    assert item_text("acme-i000001", 3, 12) != item_text("acme-i000002", 3, 12)
    assert item_text("acme-i000001", 3, 12) != item_text("acme-i000001", 4, 12)


def test_the_catalog_has_a_title_and_a_description_for_every_item_and_is_the_same_for_a_seed():
    cfg = load_settings(environ={}).simulate.model_copy(update={"users": 50, "items": 300, "authors": 20})
    world = World.build(cfg, ("acme", "globex"), 2)
    catalog = world.catalog(start=date(2026, 11, 1), ids=Ids(world))
    again = World.build(cfg, ("acme", "globex"), 2).catalog(start=date(2026, 11, 1), ids=Ids(world))

    assert {"title", "description"} <= set(catalog.column_names)
    assert catalog.select(["title", "description"]).equals(again.select(["title", "description"]))
    assert all(catalog["title"].to_pylist()) and all(d.endswith(".") for d in catalog["description"].to_pylist())


def test_most_of_a_description_is_the_topics_own_words_the_rest_noise():
    own = set(topic_words(5))
    words = [w.strip(".").lower() for i in range(200) for w in item_text(f"i{i}", 5, 12)[1].split()]
    share = sum(w in own for w in words) / len(words)
    assert 0.5 < share < 0.8


def test_topics_past_the_themes_get_a_pair_of_themes_and_wrap_after_every_pair():
    assert topic_words(len(THEMES)) == THEMES[0] + THEMES[1]
    assert topic_words(DISTINCT_TOPICS) == topic_words(0)
    assert len({topic_words(t) for t in range(DISTINCT_TOPICS)}) == DISTINCT_TOPICS


@pytest.mark.parametrize("n_topics", [pytest.param(12, id="default-12-topics"),
                                      pytest.param(40, id="40-topics-most-of-them-pairs-of-themes")])
def test_an_embedding_model_recovers_the_topic_from_the_text_well_above_chance(n_topics):
    rng = np.random.default_rng(1)
    topics = rng.integers(0, n_topics, 1200)
    texts = [item_text(f"acme-i{i:06d}", int(t), n_topics) for i, t in enumerate(topics)]
    vectors = load_embedder(ContentSettings()).embed([f"{title}\n{description}" for title, description in texts])
    train, test = slice(0, 800), slice(800, None)
    centroids = np.stack([vectors[train][topics[train] == t].mean(axis=0) for t in range(n_topics)])
    accuracy = float(((vectors[test] @ centroids.T).argmax(axis=1) == topics[test]).mean())

    assert accuracy > 3 / n_topics
