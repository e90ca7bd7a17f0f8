"""What the two towers read: vocabularies (string id -> row, 0 = out of vocabulary) and the feature arrays.

Why vocabularies rather than hashing: the catalog and the user base of a window are known and small enough to
list, a vocabulary has no collisions, and it is saved with the version, so a pod maps ids exactly as training
did. Anything unseen (a new user, an item with too few positives) shares row 0 and is placed by its features.

Query tower: user id, [log1p(positives), topic shares of the positives], content profile (mean content
vector of the positives). Item tower: item id, topic id, author id, [log1p(positives),
log1p(impressions)], content vector. Why shares: they say what a user engages with in terms every item has,
so a user's tastes carry over to items they never saw (on the bench, id embeddings memorised the window and
lost recall on the next day; author shares as well, so they are not used). Why impressions beside positives:
together they tell how often an item was taken when shown, its quality as far as the logs go, not only how
much it was shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feedloop.retrieval.items import Catalog

OOV = 0
ITEM_FEATS = 2  # log1p(positives), log1p(impressions) in the window


@dataclass(frozen=True)
class Vocab:
    """ids[k] is row k + 1; row 0 is every id not listed."""

    ids: tuple[str, ...]

    @classmethod
    def of(cls, counts: Counter, min_count: int = 1) -> Vocab:
        return cls(tuple(sorted(k for k, n in counts.items() if k and n >= min_count)))

    @property
    def size(self) -> int:
        return len(self.ids) + 1

    def index(self, values) -> np.ndarray:
        row = {v: k + 1 for k, v in enumerate(self.ids)}
        return np.array([row.get(v, OOV) for v in values], dtype=np.int64)


@dataclass(frozen=True)
class Vocabs:
    users: Vocab
    items: Vocab
    topics: Vocab
    authors: Vocab

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name).ids) for name in ("users", "items", "topics", "authors")}

    @classmethod
    def from_dict(cls, doc: dict[str, list[str]]) -> Vocabs:
        return cls(**{name: Vocab(tuple(ids)) for name, ids in doc.items()})


@dataclass(frozen=True)
class QueryInputs:
    user: np.ndarray      # [N] int64
    feats: np.ndarray     # [N, query_feats(vocabs)] float32
    profile: np.ndarray   # [N, C] float32

    def take(self, rows: np.ndarray) -> QueryInputs:
        return QueryInputs(self.user[rows], self.feats[rows], self.profile[rows])


@dataclass(frozen=True)
class ItemInputs:
    item: np.ndarray      # [N] int64
    topic: np.ndarray     # [N] int64
    author: np.ndarray    # [N] int64
    feats: np.ndarray     # [N, ITEM_FEATS] float32
    content: np.ndarray   # [N, C] float32

    def take(self, rows: np.ndarray) -> ItemInputs:
        return ItemInputs(self.item[rows], self.topic[rows], self.author[rows], self.feats[rows], self.content[rows])


@dataclass(frozen=True)
class Features:
    """The window's per-user and per-item inputs, computed once from its positives and the catalog."""

    vocabs: Vocabs
    catalog: Catalog
    user_ids: np.ndarray           # [U] str, users with positives in the window
    users: QueryInputs             # [U]
    item_positives: dict[str, int]
    item_impressions: dict[str, int]

    def queries(self, user_ids) -> QueryInputs:
        """Query inputs for any users; one with no positives in the window gets zero features."""
        row = {u: k for k, u in enumerate(self.user_ids)}
        found = np.array([row.get(u, -1) for u in user_ids], dtype=np.int64)
        known = found >= 0
        out = QueryInputs(self.vocabs.users.index(user_ids),
                          np.zeros((len(found), self.users.feats.shape[1]), np.float32),
                          np.zeros((len(found), self.users.profile.shape[1]), np.float32))
        out.feats[known] = self.users.feats[found[known]]
        out.profile[known] = self.users.profile[found[known]]
        return out

    def items(self, item_ids) -> ItemInputs:
        """Item inputs for any items; one missing from the catalog has unknown topic, author and content."""
        cat = self.catalog
        row = {i: k for k, i in enumerate(cat.item_ids)}
        found = np.array([row.get(i, -1) for i in item_ids], dtype=np.int64)
        known = found >= 0
        topics = np.where(known, cat.topics[found], "")
        authors = np.where(known, cat.authors[found], "")
        content = np.zeros((len(found), cat.content_dim), np.float32)
        content[known] = cat.content[found[known]]
        counts = np.array([[self.item_positives.get(i, 0), self.item_impressions.get(i, 0)] for i in item_ids],
                          dtype=np.float32).reshape(-1, ITEM_FEATS)
        v = self.vocabs
        return ItemInputs(v.items.index(item_ids), v.topics.index(topics), v.authors.index(authors),
                          np.log1p(counts), content)


def query_feats(vocabs: Vocabs) -> int:
    """log1p(positives) and the topic shares (unknown topic: row 0)."""
    return 1 + vocabs.topics.size


def build(positives: pa.Table, catalog: Catalog, impressions: pa.Table | None = None, *, min_user_positives: int = 1,
          min_item_positives: int = 1) -> Features:
    """Vocabularies and per-user inputs from the window's positives (tenant_id, user_id, item_id, d) and its
    impressions per item (item_id, impressions; None: unknown, zeros)."""
    users = np.array(positives["user_id"].to_pylist(), dtype=object)
    items = np.array(positives["item_id"].to_pylist(), dtype=object)
    vocabs = Vocabs(Vocab.of(Counter(users.tolist()), min_user_positives),
                    Vocab.of(Counter(items.tolist()), min_item_positives),
                    Vocab.of(Counter(catalog.topics.tolist())), Vocab.of(Counter(catalog.authors.tolist())))
    shown = {} if impressions is None else dict(zip(impressions["item_id"].to_pylist(),
                                                    impressions["impressions"].to_pylist()))
    partial = Features(vocabs, catalog, np.zeros(0, dtype=object),
                       QueryInputs(np.zeros(0, np.int64), np.zeros((0, query_feats(vocabs)), np.float32),
                                   np.zeros((0, catalog.content_dim), np.float32)),
                       dict(Counter(items.tolist())), shown)
    user_ids, user_row = np.unique(users, return_inverse=True)
    per_item = partial.items(items)
    n = np.bincount(user_row, minlength=len(user_ids)).astype(np.float32)
    topics = np.zeros((len(user_ids), vocabs.topics.size), np.float32)
    np.add.at(topics, (user_row, per_item.topic), 1.0)
    profile = np.zeros((len(user_ids), catalog.content_dim), np.float32)
    np.add.at(profile, user_row, per_item.content)
    feats = np.concatenate([np.log1p(n)[:, None], topics / n[:, None]], axis=1)
    return Features(vocabs, catalog, user_ids, QueryInputs(vocabs.users.index(user_ids), feats.astype(np.float32),
                                                           (profile / n[:, None]).astype(np.float32)),
                    partial.item_positives, shown)
