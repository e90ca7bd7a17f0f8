"""The two ways a simulated request can be served, and how good each truly was against the whole catalog.

Why: with `--recommend`, part of the requests go to POST /recommend (the pods pick from the whole catalog:
retriever, then ranker) and the rest to POST /rank over the feed service's own candidate pool, as in an A/B
split. Judging each list against its own pool would score /recommend against the catalog and /rank against
36 items; both are judged here against the same ideal, the user's truly best items of the tenant's catalog
at that moment, so the arms compare.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from feedloop.ops.simulate.world import NDCG_K, ndcg_at_k

RECOMMEND = "recommend"  # the pods chose from the whole catalog (POST /recommend)
POOL = "pool"            # the feed service's candidate pool: ranked by the pods (POST /rank) or the legacy policy


def takes_recommend(request_id: str, share: float) -> bool:
    """Whether a request is in the /recommend arm: a stable hash of its id, so a re-run splits the same way and
    the split draws nothing from the simulator's generator (the rest of the traffic stays as it was)."""
    return share > 0 and zlib.crc32(request_id.encode()) < share * 2**32


@dataclass
class ArmStats:
    """One arm's lists on one day, judged against each user's best items of the tenant's catalog."""

    lists: int = 0
    catalog_ndcg_sum: float = 0.0   # DCG@10 of the list over the DCG of the catalog's best 10 for the user
    best_recall_sum: float = 0.0    # share of the catalog's best 10 for the user that the list showed
    catalog_ndcg: float = 0.0
    best_recall: float = 0.0

    def add(self, shown: np.ndarray, shown_gains: np.ndarray, catalog: np.ndarray, catalog_gains: np.ndarray) -> None:
        best = catalog[np.argsort(-catalog_gains, kind="stable")[:NDCG_K]]
        self.lists += 1
        self.catalog_ndcg_sum += ndcg_at_k(shown_gains, catalog_gains)
        self.best_recall_sum += len(np.intersect1d(shown, best)) / len(best)
        self.catalog_ndcg = self.catalog_ndcg_sum / self.lists
        self.best_recall = self.best_recall_sum / self.lists
