"""A pod's local copy of every version it verified, and which one is live (last_good.json): one per model kind."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import orjson

from feedloop.serving.model import FOLDER_NAME, MANIFEST, Root, SwapRefused, Target, first_line

log = logging.getLogger("feedloop.serving")
LISTING = "cached_files.json"  # written last into a version's folder: the names saved, so a half-saved copy is none


class LocalCache:
    """The live model's files on local disk: a cold start with S3 down can still serve what was live.

    Every verified version's files go in a folder of its own (save), then the list of their names;
    last_good.json names the live one and is rewritten after every swap (mark_live), so it never
    names a model that was rolled back. The ranker and the retriever each have a cache of their own.
    A name read back is checked like a pointer's, and every path must resolve inside the cache.
    After each swap only the `keep` most recently saved versions and the live one stay: a pod that
    swaps daily for a year would otherwise fill its disk with 365 models. Recency, not "not live",
    decides, because uvicorn workers share the cache and another worker's newest save may not be
    live yet.
    """

    def __init__(self, root: Path, versions: Root, keep: int = 3):
        self.root, self.versions, self.keep = root, versions, keep

    def save(self, target: Target, manifest_body: bytes, files: dict[str, bytes]) -> None:
        """Keep a verified version's files; a full or read-only disk is logged, never raised: the pod serves on."""
        try:
            for name, body in {MANIFEST: manifest_body, **files}.items():
                _write_atomic(self._path(target.version, name), body)
            _write_atomic(self._path(target.version, LISTING), orjson.dumps(sorted(files)))
        except (OSError, ValueError) as exc:
            log.warning("cannot keep a local copy of %s in %s (%s): a cold start with S3 down will not serve it",
                        target.version, self.root, first_line(exc))

    def mark_live(self, target: Target | None) -> None:
        """last_good.json names `target`, if its files are here; else it is removed (naming nothing beats a stale
        model). Like save, a disk that refuses is logged, never raised."""
        pointer = self.root / "last_good.json"
        try:
            if target is not None and self._complete(target.version):
                _write_atomic(pointer, orjson.dumps(target.__dict__))
                self._prune(live=target.version)
                return
            pointer.unlink(missing_ok=True)
        except (OSError, ValueError) as exc:
            log.warning("cannot record %s as live in %s (%s)", target.version if target else None, self.root,
                        first_line(exc))
            return
        if target is not None:
            log.warning("no local copy of live model %s: a cold start with S3 down will not serve", target.version)

    def load(self) -> tuple[Target, bytes, dict[str, bytes]] | None:
        try:
            target = Target.parse(orjson.loads((self.root / "last_good.json").read_bytes()), "last_good.json",
                                  self.versions)
            manifest_body = self._path(target.version, MANIFEST).read_bytes()
            files = {name: self._path(target.version, name).read_bytes() for name in self._listing(target.version)}
        except (OSError, ValueError, TypeError, SwapRefused) as exc:
            log.warning("no usable last-known-good copy in %s (%s)", self.root, first_line(exc))
            return None
        return target, manifest_body, files

    def _listing(self, version: str) -> list[str]:
        """The file names saved for `version` (OSError before its listing was written; ValueError if it is bad)."""
        names = orjson.loads(self._path(version, LISTING).read_bytes())
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{version}/{LISTING} is not a list of file names")
        return names

    def _complete(self, version: str) -> bool:
        try:
            return all(self._path(version, n).is_file() for n in (MANIFEST, *self._listing(version)))
        except (OSError, ValueError):
            return False

    def _prune(self, live: str) -> None:
        """Remove version folders beyond the `keep` most recently saved ones, never the live one."""
        folders = sorted((d for d in self.root.iterdir() if d.is_dir() and FOLDER_NAME.fullmatch(d.name)),
                         key=_mtime, reverse=True)
        for old in folders[self.keep:]:
            if old.name != live:
                shutil.rmtree(old, ignore_errors=True)  # another worker may be removing it too
                log.info("removed %s from the local model cache (keeps %d)", old.name, self.keep)

    def _path(self, version: str, name: str) -> Path:
        """The file `name` of `version` in the cache; ValueError for anything that would resolve outside it."""
        root = self.root.resolve()
        path = (root / version / name).resolve()
        if not FOLDER_NAME.fullmatch(version) or not path.is_relative_to(root / version):
            raise ValueError(f"{version!r}/{name!r} is not a file of a version folder inside {root}")
        return path


def _mtime(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:  # removed meanwhile by another worker
        return 0.0


def _write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # uvicorn workers share the cache
    tmp.write_bytes(body)
    tmp.replace(path)

