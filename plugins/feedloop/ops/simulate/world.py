"""The hidden ground truth of the simulation: users, items, authors, and how good an item truly is for a user.

Why: a ranker is only worth retraining daily if it learns something measurable. The world here has
users with topic tastes, items with a latent quality and authors that users follow; `true_gain` and
`ndcg_at_k` score any shown list against the truth that generated the clicks, offline or online.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson

from feedloop.core.config import SimulateSettings
from feedloop.ops.simulate.text import item_text

CATALOG_HISTORY_DAYS = 30   # items were created up to this many days before the first simulated day
NDCG_K = 10


@dataclass(frozen=True)
class World:
    """The hidden truth: who likes what. Deterministic for a seed."""

    tenants: tuple[str, ...]
    user_tenant: np.ndarray       # [U] tenant index
    user_activity: np.ndarray     # [U] relative request rate
    user_prefs: np.ndarray        # [U, T] topic taste, rows sum to 1
    item_tenant: np.ndarray       # [I]
    item_topic: np.ndarray        # [I]
    item_quality: np.ndarray      # [I]
    item_popularity: np.ndarray   # [I] prior exposure weight (what the logged policy sees)
    item_author: np.ndarray       # [I] author index
    item_created: np.ndarray      # [I] seconds relative to the first simulated day
    author_tenant: np.ndarray     # [A]
    author_quality: np.ndarray    # [A]
    follows: np.ndarray           # [U, A] bool
    catalog_categories: int = 0   # what the catalog publishes as `topic`: 0 the exact topic, N > 0 N coarse categories

    @classmethod
    def build(cls, cfg: SimulateSettings, tenants: tuple[str, ...], days: int) -> World:
        if cfg.catalog_categories > cfg.topics:
            raise ValueError(f"simulate.catalog_categories={cfg.catalog_categories} is more than simulate.topics="
                             f"{cfg.topics}: a catalog's categories are coarser than the world's topics, or 0")
        rng = np.random.default_rng(cfg.seed)
        n_t = len(tenants)
        user_tenant = rng.integers(0, n_t, cfg.users)
        author_tenant = rng.integers(0, n_t, cfg.authors)
        author_topic = rng.integers(0, cfg.topics, cfg.authors)
        item_author = np.empty(cfg.items, dtype=np.int64)
        item_tenant = rng.integers(0, n_t, cfg.items)
        for t in range(n_t):  # an item's author writes for the item's tenant
            authors_t = np.flatnonzero(author_tenant == t)
            if len(authors_t) == 0:
                authors_t = np.arange(cfg.authors)
            idx = np.flatnonzero(item_tenant == t)
            item_author[idx] = rng.choice(authors_t, len(idx))
        # Items mostly stay on their author's topic.
        on_topic = rng.random(cfg.items) < 0.7
        item_topic = np.where(on_topic, author_topic[item_author], rng.integers(0, cfg.topics, cfg.items))
        user_prefs = rng.dirichlet(np.full(cfg.topics, 0.3), cfg.users)
        follows = np.zeros((cfg.users, cfg.authors), dtype=bool)
        for u in range(cfg.users):
            same = np.flatnonzero(author_tenant == user_tenant[u])
            if len(same):
                liked = user_prefs[u, author_topic[same]]
                k = min(len(same), int(rng.integers(1, 8)))
                follows[u, rng.choice(same, k, replace=False, p=liked / liked.sum())] = True
        horizon = (CATALOG_HISTORY_DAYS + days) * 86400
        return cls(
            tenants=tenants,
            user_tenant=user_tenant,
            user_activity=rng.pareto(1.5, cfg.users) + 0.2,
            user_prefs=user_prefs,
            item_tenant=item_tenant,
            item_topic=item_topic,
            item_quality=rng.normal(0, 1, cfg.items),
            item_popularity=rng.lognormal(0, 1.0, cfg.items),
            item_author=item_author,
            item_created=rng.uniform(-CATALOG_HISTORY_DAYS * 86400, horizon - CATALOG_HISTORY_DAYS * 86400 - 3600,
                                     cfg.items),
            author_tenant=author_tenant,
            author_quality=rng.normal(0, 0.5, cfg.authors),
            follows=follows,
            catalog_categories=cfg.catalog_categories,
        )

    def utility(self, user: int, items: np.ndarray) -> np.ndarray:
        """True relevance of items for a user (higher is better); the thing a ranker should learn."""
        n_topics = self.user_prefs.shape[1]
        taste = self.user_prefs[user, self.item_topic[items]] * n_topics  # 1.0 = average taste
        followed = self.follows[user, self.item_author[items]]
        return (
            1.2 * np.log1p(taste)
            + 0.6 * self.item_quality[items]
            + 0.4 * self.author_quality[self.item_author[items]]
            + 0.8 * followed
        )

    def catalog_topic(self, topic: int) -> str:
        """The catalog's name for a world topic: itself, or with `catalog_categories` N the coarse category
        t * N // topics (consecutive topics share one), as real taxonomies are coarser than what an item's text says."""
        n = self.catalog_categories
        return f"topic-{topic * n // self.user_prefs.shape[1] if n else topic}"

    def catalog(self, *, start: date, ids: Ids):
        """The item catalog a real platform would have: author, tenant, topic (see catalog_topic), creation time,
        and the item's title and description (feedloop.ops.simulate.text: the exact topic shows through the words,
        not the ids)."""
        import pyarrow as pa

        t0 = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        n, n_topics = len(self.item_topic), self.user_prefs.shape[1]
        texts = [item_text(ids.item(i), int(self.item_topic[i]), n_topics) for i in range(n)]
        return pa.table({
            "item_id": [ids.item(i) for i in range(n)],
            "author_id": [ids.author(int(self.item_author[i])) for i in range(n)],
            "tenant_id": [self.tenants[self.item_tenant[i]] for i in range(n)],
            "topic": [self.catalog_topic(int(t)) for t in self.item_topic],
            "created_at": pa.array([t0 + timedelta(seconds=float(s)) for s in self.item_created],
                                   pa.timestamp("ms", tz="UTC")),
            "title": [title for title, _ in texts],
            "description": [description for _, description in texts],
        })

    def save(self, path: Path, *, start: date, ids: Ids) -> None:
        """The ground truth as JSON: the whole world, by string id, so `load` rebuilds it exactly (an audit
        run later, by another process, scores the lake's lists against the same utility)."""
        n_topics = self.user_prefs.shape[1]
        doc = {
            "start": start.isoformat(),
            "utility": "1.2*log1p(pref[topic]*n_topics) + 0.6*item_quality + 0.4*author_quality + 0.8*follows",
            "n_topics": n_topics,
            "tenants": list(self.tenants),
            "users": {ids.user(u): {"tenant": self.tenants[self.user_tenant[u]],
                                    "activity": float(self.user_activity[u]),
                                    "prefs": self.user_prefs[u].tolist(),
                                    "follows": [ids.author(a) for a in np.flatnonzero(self.follows[u])]}
                      for u in range(len(self.user_tenant))},
            "items": {ids.item(i): {"tenant": self.tenants[self.item_tenant[i]], "topic": int(self.item_topic[i]),
                                    "quality": float(self.item_quality[i]),
                                    "popularity": float(self.item_popularity[i]),
                                    "author": ids.author(int(self.item_author[i])),
                                    "created_s": float(self.item_created[i])}
                      for i in range(len(self.item_topic))},
            "authors": {ids.author(a): {"tenant": self.tenants[self.author_tenant[a]],
                                        "quality": float(self.author_quality[a])}
                        for a in range(len(self.author_quality))},
        }
        if self.catalog_categories:  # only when set: the default world's file stays what it always was
            doc["catalog_categories"] = self.catalog_categories
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(doc))

    @classmethod
    def load(cls, path: Path) -> World:
        """The world `save` wrote (entities in id order, as saved)."""
        doc = orjson.loads(path.read_bytes())
        if "tenants" not in doc:
            raise ValueError(f"{path} was written by an older feedloop and lacks the tenants, popularity and "
                             "creation times of its entities; simulate again (`make clean && make demo`)")
        tenant = {t: k for k, t in enumerate(doc["tenants"])}
        users, items, authors = doc["users"].values(), doc["items"].values(), doc["authors"].values()
        author_index = {a: k for k, a in enumerate(doc["authors"])}
        follows = np.zeros((len(users), len(authors)), dtype=bool)
        for u, user in enumerate(users):
            follows[u, [author_index[a] for a in user["follows"]]] = True
        return cls(
            tenants=tuple(doc["tenants"]),
            user_tenant=np.array([tenant[u["tenant"]] for u in users]),
            user_activity=np.array([u["activity"] for u in users]),
            user_prefs=np.array([u["prefs"] for u in users]).reshape(len(users), doc["n_topics"]),
            item_tenant=np.array([tenant[i["tenant"]] for i in items]),
            item_topic=np.array([i["topic"] for i in items]),
            item_quality=np.array([i["quality"] for i in items]),
            item_popularity=np.array([i["popularity"] for i in items]),
            item_author=np.array([author_index[i["author"]] for i in items], dtype=np.int64),
            item_created=np.array([i["created_s"] for i in items]),
            author_tenant=np.array([tenant[a["tenant"]] for a in authors]),
            author_quality=np.array([a["quality"] for a in authors]),
            follows=follows,
            catalog_categories=doc.get("catalog_categories", 0),
        )


@dataclass(frozen=True)
class Ids:
    """Stable string ids: the tenant is part of every entity id (tenants have separate catalogs)."""

    world: World

    def user(self, u: int) -> str:
        return f"{self.world.tenants[self.world.user_tenant[u]]}-u{u:06d}"

    def item(self, i: int) -> str:
        return f"{self.world.tenants[self.world.item_tenant[i]]}-i{i:06d}"

    def author(self, a: int) -> str:
        return f"{self.world.tenants[self.world.author_tenant[a]]}-a{a:05d}"

    @cached_property
    def user_index(self) -> dict[str, int]:
        """user_id -> the world's user: what the lake's rows are mapped back to the truth with."""
        return {self.user(u): u for u in range(len(self.world.user_tenant))}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {self.item(i): i for i in range(len(self.world.item_topic))}



def true_gain(world: World, user: int, items: np.ndarray) -> np.ndarray:
    """The click probability of an item if the user examined it, sigmoid(utility - 1): the position-free
    relevance that simulated clicks are drawn from (times the examination probability)."""
    return sigmoid(world.utility(user, items) - 1.0)


def ndcg_at_k(shown_gains: np.ndarray, pool_gains: np.ndarray, k: int = NDCG_K) -> float:
    """Ground-truth NDCG@k of a shown list: its DCG (gain / log2(position + 1)) over the DCG of the best
    k items of the candidate pool it was chosen from. 1.0 = the best possible list from that pool."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    shown = np.asarray(shown_gains, dtype=float)[:k]
    ideal = np.sort(np.asarray(pool_gains, dtype=float))[::-1][:k]
    idcg = float(ideal @ discount[:len(ideal)])
    return float(shown @ discount[:len(shown)]) / idcg if idcg > 0 else 0.0



def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
