"""The pod's local model cache keeps the most recently saved versions and the live one, nothing more."""

from __future__ import annotations

import os

from feedloop.serving.local_cache import LocalCache
from feedloop.serving.model import ARTIFACTS, MANIFEST, Root, Target

VERSIONS = Root("models", "ranker/versions/")


def _save(cache: LocalCache, version: str, mtime: float) -> Target:
    target = Target(version=version, uri=VERSIONS.uri(version), sha256="0" * 64)
    cache.save(target, b"{}", {name: b"x" for name in ARTIFACTS})
    os.utime(cache.root / version, (mtime, mtime))
    return target


def test_after_a_swap_only_the_newest_saves_and_the_live_version_stay(tmp_path):
    cache = LocalCache(tmp_path, VERSIONS, keep=2)
    days = [_save(cache, f"2026-11-{d:02d}-a1b{d}", mtime=1_000 + d) for d in range(1, 7)]
    (tmp_path / "not-a-version").mkdir()                       # not ours: never touched
    cache.mark_live(days[0])                                   # a rollback to the oldest
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [days[0].version, days[4].version, days[5].version, "last_good.json", "not-a-version"])
    assert cache.load()[0].version == days[0].version          # the live one still loads in full
    cache.mark_live(days[5])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "not-a-version") == sorted(
        [days[4].version, days[5].version, "last_good.json"])
    assert (tmp_path / days[5].version / MANIFEST).is_file()
