"""The ground-truth file: another process (an audit, a bench) rebuilds exactly the world that generated the traffic."""

from __future__ import annotations

from dataclasses import fields
from datetime import date

import numpy as np
import orjson
import pytest

from feedloop.core.config import load_settings
from feedloop.ops.simulate import Ids, Simulator, World


def test_a_saved_world_loads_back_identical_with_the_same_ids(tmp_path):
    sim = Simulator(load_settings(environ={}), start=date(2026, 11, 1), days=3, events_per_day=100, seed=11)
    path = tmp_path / "truth.json"
    sim.world.save(path, start=sim.start, ids=sim.ids)
    loaded = World.load(path)
    for f in fields(World):
        mine, theirs = getattr(sim.world, f.name), getattr(loaded, f.name)
        assert np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) else mine == theirs, f.name
    ids = Ids(loaded)
    assert ids.user_index == sim.ids.user_index and ids.item_index == sim.ids.item_index
    assert [ids.author(a) for a in range(len(loaded.author_quality))] == \
        [sim.ids.author(a) for a in range(len(sim.world.author_quality))]
    users = np.arange(20)
    assert [loaded.utility(u, np.arange(50)).tolist() for u in users] == \
        [sim.world.utility(u, np.arange(50)).tolist() for u in users]


def test_a_file_of_the_older_format_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "old.json"
    path.write_bytes(orjson.dumps({"start": "2026-11-01", "n_topics": 2, "users": {}, "items": {}, "authors": {}}))
    with pytest.raises(ValueError, match="older feedloop.*simulate again"):
        World.load(path)
