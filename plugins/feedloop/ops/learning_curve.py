"""The closed loop's learning curve as a PNG: ground-truth NDCG@10 of what was served, day by day.

Why a picture: whether the loop keeps learning after its first promotion (or stalls behind a
champion the gate cannot see past) shows at a glance as a flat line after the first marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class CurveDay:
    day: str                        # YYYY-MM-DD
    served: float                   # ground-truth NDCG@10 of the lists served that day
    legacy: float                   # ... of the legacy policy's lists for the same requests
    promoted: str | None = None     # the version that day's retrain made live (it serves from the next day)


def plot(*, days: Sequence[CurveDay], path: Path, title: str) -> Path:
    """Write the curve to `path` (PNG, matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(days)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(days) + 3), 4))
    ax.plot(x, [d.served for d in days], marker="o", label="served (ground truth)")
    ax.plot(x, [d.legacy for d in days], marker=".", linestyle="--", color="grey", label="legacy policy, same requests")
    for i, d in enumerate(days):
        if d.promoted:
            ax.axvline(i + 0.5, color="green", alpha=0.4)
            ax.annotate(f"{d.promoted} live", (i + 0.5, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, ha="right", va="top", color="green")
    ax.set_xticks(x, [d.day[5:] for d in days], rotation=45, fontsize=8)
    ax.set_ylabel("NDCG@10, gain sigmoid(utility - 1)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
