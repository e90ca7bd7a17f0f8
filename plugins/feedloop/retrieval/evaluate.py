"""Recall on the holdout day: of the items each user engaged with, how many are in the user's top k.

Why recall@k and not a ranking metric: retrieval only has to get the good items into the few hundred the
ranker sees; their order is the ranker's job. Why beside popularity: the tenant's most engaged items are what
a retrieval stage without a model would return, so a model must beat that to be worth serving. Why a cold
recall: items with no engagement in the training window can only be reached through their features and
content; popularity never reaches them, and that is most of what the content embeddings are for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from feedloop.retrieval.index import TenantIndex
from feedloop.retrieval.items import Catalog

Lists = dict[str, list[str]]          # user -> retrieved items, best first
QueryVectors = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Recall:
    """One retriever's recall@k, mean over the users with at least one relevant item."""

    name: str
    at: dict[int, float]
    users: int
    by_tenant: dict[str, dict[int, float]] = field(default_factory=dict)
    cold_at: dict[int, float] = field(default_factory=dict)  # of the relevant items cold in training only
    cold_users: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "users": self.users, "cold_users": self.cold_users,
                **{f"recall@{k}": round(v, 4) for k, v in self.at.items()},
                **{f"cold_recall@{k}": round(v, 4) for k, v in self.cold_at.items()},
                "by_tenant": {t: {f"recall@{k}": round(v, 4) for k, v in r.items()}
                              for t, r in self.by_tenant.items()}}


def recall_at(lists: Mapping[str, list[str]], relevant: Mapping[str, set[str]], ks) -> dict[int, float]:
    """Mean over users with relevant items of |top k ∩ relevant| / |relevant| (a user with no list scores 0)."""
    users = [u for u, items in relevant.items() if items]
    if not users:
        return {k: 0.0 for k in ks}
    return {k: float(np.mean([len(set(lists.get(u, [])[:k]) & relevant[u]) / len(relevant[u]) for u in users]))
            for k in ks}


def score(name: str, lists: Lists, relevant: Mapping[str, set[str]], user_tenant: Mapping[str, str], ks,
          cold_items: set[str] = frozenset()) -> Recall:
    """Recall overall, per tenant and on the cold relevant items."""
    tenants = sorted(set(user_tenant.values()))
    by_tenant = {t: recall_at(lists, {u: r for u, r in relevant.items() if user_tenant[u] == t}, ks) for t in tenants}
    cold = {u: r & cold_items for u, r in relevant.items() if r & cold_items}
    return Recall(name, recall_at(lists, relevant, ks), sum(1 for r in relevant.values() if r), by_tenant,
                  recall_at(lists, cold, ks) if cold else {}, len(cold))


def retrieve(query_vectors: QueryVectors, index: TenantIndex, user_tenant: Mapping[str, str], k: int) -> Lists:
    """Each user's top k of their own tenant's index."""
    lists: Lists = {}
    for tenant in sorted(set(user_tenant.values())):
        users = sorted(u for u, t in user_tenant.items() if t == tenant)
        found, _ = index.search(tenant, query_vectors(users), k)
        lists.update(zip(users, found))
    return lists


def popularity(train_positives: pa.Table, catalog: Catalog, user_tenant: Mapping[str, str], k: int) -> Lists:
    """Every user gets their tenant's catalog items by positives in the training window (ties by item id)."""
    counts = Counter(train_positives["item_id"].to_pylist())
    by_tenant: dict[str, list[str]] = {}
    for tenant in set(user_tenant.values()):
        items = catalog.item_ids[catalog.tenant_ids == tenant].tolist()
        by_tenant[tenant] = sorted(items, key=lambda i: (-counts.get(i, 0), i))[:k]
    return {u: by_tenant[t] for u, t in user_tenant.items()}


def engaged(holdout_positives: pa.Table) -> tuple[dict[str, set[str]], dict[str, str]]:
    """The holdout day's relevant items per user, and each user's tenant."""
    relevant: dict[str, set[str]] = {}
    user_tenant: dict[str, str] = {}
    for tenant, user, item in zip(holdout_positives["tenant_id"].to_pylist(), holdout_positives["user_id"].to_pylist(),
                                  holdout_positives["item_id"].to_pylist()):
        relevant.setdefault(user, set()).add(item)
        user_tenant[user] = tenant
    return relevant, user_tenant


def retrieved(*, models: Mapping[str, tuple[QueryVectors, TenantIndex]], train_positives: pa.Table, catalog: Catalog,
              user_tenant: Mapping[str, str], k: int) -> dict[str, Lists]:
    """Each named model's and popularity's top k for every user."""
    lists = {name: retrieve(vectors, index, user_tenant, k) for name, (vectors, index) in models.items()}
    lists["popularity"] = popularity(train_positives, catalog, user_tenant, k)
    return lists


def scored(lists: Mapping[str, Lists], *, train_positives: pa.Table, holdout_positives: pa.Table, catalog: Catalog,
           ks) -> list[Recall]:
    """Recall of each model's lists on the holdout day's engaged items (cold: not engaged with in training)."""
    relevant, user_tenant = engaged(holdout_positives)
    cold = set(catalog.item_ids.tolist()) - set(train_positives["item_id"].to_pylist())
    return [score(name, by_user, relevant, user_tenant, ks, cold) for name, by_user in lists.items()]


def holdout(*, models: Mapping[str, tuple[QueryVectors, TenantIndex]], train_positives: pa.Table,
            holdout_positives: pa.Table, catalog: Catalog, ks) -> list[Recall]:
    """Recall of each named model and of popularity on the holdout day's engaged items."""
    _, user_tenant = engaged(holdout_positives)
    lists = retrieved(models=models, train_positives=train_positives, catalog=catalog, user_tenant=user_tenant,
                      k=max(ks))
    return scored(lists, train_positives=train_positives, holdout_positives=holdout_positives, catalog=catalog, ks=ks)
