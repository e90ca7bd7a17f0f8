"""Every simulated request with the whole candidate pool it was ranked from, kept for the ground-truth audit.

Why: the lake holds only the items a request SHOWED, and those were chosen by the model that served.
Reranking them judges other models inside the logger's own selection: its top items include the
ones it overrated, which any other model pushes down, so every other model looks better than the
logger (measured on seed 12: each version scored 0.006-0.027 lower on the lists it chose itself than
on the lists of the day before or after). Scoring whole pools, as the pods would have, judges every
model on the same footing and answers "what would users have got had this version served".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DayPools:
    """One day's requests in order: request r's pool is items[offsets[r]:offsets[r + 1]] (world indices)."""

    request_ids: list[str] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    surfaces: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)          # the request time, epoch seconds
    offsets: list[int] = field(default_factory=lambda: [0])
    items: list[np.ndarray] = field(default_factory=list)

    def add(self, *, request_id: str, user: int, surface: str, device: str, ts: float, pool: np.ndarray) -> None:
        self.request_ids.append(request_id)
        self.users.append(user)
        self.surfaces.append(surface)
        self.devices.append(device)
        self.ts.append(ts)
        self.items.append(np.asarray(pool, dtype=np.int64))
        self.offsets.append(self.offsets[-1] + len(pool))

    def __len__(self) -> int:
        return len(self.request_ids)

    def pool(self, r: int) -> np.ndarray:
        return self.items[r]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: np.savez would append ".npz" to a bare path
            np.savez_compressed(f, request_ids=np.array(self.request_ids, dtype=str), users=np.array(self.users),
                                surfaces=np.array(self.surfaces, dtype=str), devices=np.array(self.devices, dtype=str),
                                ts=np.array(self.ts, dtype=np.float64), offsets=np.array(self.offsets),
                                items=np.concatenate(self.items) if self.items else np.zeros(0, np.int64))

    @classmethod
    def load(cls, path: Path) -> DayPools:
        if not path.exists():
            raise FileNotFoundError(f"no candidate pools at {path}: this day was simulated before pools were kept; "
                                    "`make clean` and run the loop again")
        with np.load(path) as z:
            offsets = z["offsets"].tolist()
            items = z["items"]
            return cls(request_ids=z["request_ids"].tolist(), users=z["users"].tolist(),
                       surfaces=z["surfaces"].tolist(), devices=z["devices"].tolist(), ts=z["ts"].tolist(),
                       offsets=offsets, items=[items[a:b] for a, b in zip(offsets, offsets[1:])])


def path_for(state_path: Path, day: str) -> Path:
    return state_path / "pools" / f"{day}.npz"
