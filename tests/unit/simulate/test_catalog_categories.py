"""simulate.catalog_categories: the catalog publishes a coarser taxonomy than the items' text and the hidden truth."""

from __future__ import annotations

from dataclasses import fields
from datetime import date

import numpy as np
import orjson
import pytest

from feedloop.core.config import load_settings
from feedloop.ops.simulate import Ids, SimulationReport, Simulator, World

START = date(2026, 11, 1)


def _world(categories: int | None = None, environ: dict[str, str] | None = None) -> World:
    cfg = load_settings(environ=environ or {}).simulate.model_copy(update={"users": 60, "items": 400, "authors": 30})
    if categories is not None:
        cfg = cfg.model_copy(update={"catalog_categories": categories})
    return World.build(cfg, ("acme", "globex"), 2)


def test_by_default_the_catalog_publishes_four_categories_and_0_the_worlds_exact_topics():
    assert _world().catalog_categories == 4
    world = _world(0)
    catalog = world.catalog(start=START, ids=Ids(world))

    assert catalog["topic"].to_pylist() == [f"topic-{t}" for t in world.item_topic]


def test_with_four_categories_of_twelve_topics_each_category_holds_three_consecutive_topics():
    world = _world(4)
    catalog = world.catalog(start=START, ids=Ids(world))

    assert world.user_prefs.shape[1] == 12
    assert [world.catalog_topic(t) for t in range(12)] == [f"topic-{t // 3}" for t in range(12)]
    assert catalog["topic"].to_pylist() == [f"topic-{t // 3}" for t in world.item_topic]
    assert set(catalog["topic"].to_pylist()) == {"topic-0", "topic-1", "topic-2", "topic-3"}


def test_only_the_published_topic_changes_the_text_and_the_hidden_truth_keep_the_exact_topic():
    exact, coarse = _world(0), _world(4)
    a, b = (w.catalog(start=START, ids=Ids(w)) for w in (exact, coarse))

    assert a.drop_columns(["topic"]).equals(b.drop_columns(["topic"]))
    for f in fields(World):
        if f.name != "catalog_categories":
            mine, theirs = getattr(exact, f.name), getattr(coarse, f.name)
            assert np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs, f.name
    assert np.array_equal(exact.utility(5, np.arange(50)), coarse.utility(5, np.arange(50)))


def test_the_traffic_is_the_same_whatever_the_catalog_publishes():
    def records(categories: int) -> list[bytes]:
        settings = load_settings(environ={})
        settings = settings.model_copy(update={"simulate": settings.simulate.model_copy(
            update={"catalog_categories": categories})})
        sim = Simulator(settings, start=START, days=1, events_per_day=500, seed=3)
        return [r.value for r in sim.records(SimulationReport(start=START, days=1))]

    assert records(0) == records(4)


def test_the_ground_truth_file_keeps_the_exact_topics_and_loads_back_the_categories(tmp_path):
    world = _world(4)
    world.save(tmp_path / "coarse.json", start=START, ids=Ids(world))
    _world(0).save(tmp_path / "exact.json", start=START, ids=Ids(world))
    doc = orjson.loads((tmp_path / "coarse.json").read_bytes())

    assert [i["topic"] for i in doc["items"].values()] == world.item_topic.tolist()
    assert doc["catalog_categories"] == 4 and World.load(tmp_path / "coarse.json").catalog_categories == 4
    assert "catalog_categories" not in orjson.loads((tmp_path / "exact.json").read_bytes())  # the file as before
    assert World.load(tmp_path / "exact.json").catalog_categories == 0


def test_the_environment_sets_it():
    world = _world(environ={"FEEDLOOP_SIMULATE__CATALOG_CATEGORIES": "2"})

    assert world.catalog_categories == 2 and world.catalog_topic(11) == "topic-1"


@pytest.mark.parametrize("categories", [pytest.param(13, id="more-categories-than-topics"),
                                        pytest.param(-1, id="negative")])
def test_a_taxonomy_finer_than_the_world_or_negative_is_refused(categories):
    with pytest.raises(ValueError, match="catalog_categories"):
        _world(environ={"FEEDLOOP_SIMULATE__CATALOG_CATEGORIES": str(categories)})
