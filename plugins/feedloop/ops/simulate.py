"""Synthetic engagement traffic with a hidden ground truth, produced to Kafka.

Why: a ranker is only worth retraining daily if it learns something measurable. The world
here has users with topic tastes, items with a latent quality, authors that users follow,
and clicks that depend on position (position bias) as well as on true utility, so offline
and online metrics can be checked against the truth that generated them.
"""

from __future__ import annotations

import bisect
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import orjson

from feedloop.core.config import Settings, SimulateSettings
from feedloop.contract.events import SCHEMA_VERSION, format_ts, to_json
from feedloop.ops.traffic import LATE_MAX_HOURS, DayTraffic, bursty_day, steady_day

if TYPE_CHECKING:
    from feedloop.serving.client import Ranked

SURFACE_SHARE = {"feed": 0.6, "search": 0.15, "related": 0.15, "notifications": 0.1}
DEVICE_SHARE = {"ios": 0.4, "android": 0.4, "web": 0.2}
# Examination probability at position p is (1/p) ** eta[surface]: search users scan less deeply.
POSITION_BIAS_ETA = {"feed": 0.8, "search": 1.1, "related": 0.9, "notifications": 0.6}
CATALOG_HISTORY_DAYS = 30   # items were created up to this many days before the first simulated day
OUTCOMES_PER_IMPRESSION = 0.3  # rough, used only to size the number of requests per day
NDCG_K = 10
LEGACY = "legacy"  # what the report calls the logged (pre-model) policy
# A ranker answers a POST /rank body with the order shown, or None (no model yet: the legacy policy shows it).
Ranker = Callable[[dict], "Ranked | None"]


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

    @classmethod
    def build(cls, cfg: SimulateSettings, tenants: tuple[str, ...], days: int) -> World:
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

    def catalog(self, *, start: date, ids: Ids):
        """The item catalog a real platform would have: author, tenant, topic and creation time."""
        import pyarrow as pa

        t0 = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        n = len(self.item_topic)
        return pa.table({
            "item_id": [ids.item(i) for i in range(n)],
            "author_id": [ids.author(int(self.item_author[i])) for i in range(n)],
            "tenant_id": [self.tenants[self.item_tenant[i]] for i in range(n)],
            "topic": [f"topic-{int(t)}" for t in self.item_topic],
            "created_at": pa.array([t0 + timedelta(seconds=float(s)) for s in self.item_created],
                                   pa.timestamp("ms", tz="UTC")),
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


def examination(surface: str, positions: np.ndarray) -> np.ndarray:
    return (1.0 / positions) ** POSITION_BIAS_ETA[surface]


def true_gain(world: World, user: int, items: np.ndarray) -> np.ndarray:
    """The click probability of an item if the user examined it, sigmoid(utility - 1): the position-free
    relevance that simulated clicks are drawn from (times the examination probability)."""
    return _sigmoid(world.utility(user, items) - 1.0)


def ndcg_at_k(shown_gains: np.ndarray, pool_gains: np.ndarray, k: int = NDCG_K) -> float:
    """Ground-truth NDCG@k of a shown list: its DCG (gain / log2(position + 1)) over the DCG of the best
    k items of the candidate pool it was chosen from. 1.0 = the best possible list from that pool."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    shown = np.asarray(shown_gains, dtype=float)[:k]
    ideal = np.sort(np.asarray(pool_gains, dtype=float))[::-1][:k]
    idcg = float(ideal @ discount[:len(ideal)])
    return float(shown @ discount[:len(shown)]) / idcg if idcg > 0 else 0.0


@dataclass(order=True)
class Record:
    """One event as it will reach Kafka: arrival time (the record timestamp), key and JSON value."""

    arrival_ms: int
    key: bytes = field(compare=False)
    value: bytes = field(compare=False)


@dataclass
class DayStats:
    """What the simulated users were shown on one day, by whom, and how good it truly was."""

    day: str
    lists: int = 0                                   # ranked lists shown
    by_version: dict[str, int] = field(default_factory=dict)  # lists per model version, "legacy" for the logged policy
    impressions: int = 0
    clicks: int = 0
    ndcg_sum: float = 0.0                            # ground-truth NDCG@10 of what was shown, summed over lists
    legacy_ndcg_sum: float = 0.0                     # ... of what the legacy policy would have shown, same requests
    ctr: float = 0.0                                 # online CTR: clicks / impressions shown
    ndcg: float = 0.0                                # mean ground-truth NDCG@10 of what was shown
    legacy_ndcg: float = 0.0                         # mean NDCG@10 the legacy policy gets on the same requests

    def add(self, *, version: str, impressions: int, clicks: int, ndcg: float, legacy_ndcg: float) -> None:
        self.lists += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        self.impressions += impressions
        self.clicks += clicks
        self.ndcg_sum += ndcg
        self.legacy_ndcg_sum += legacy_ndcg
        self.ctr = self.clicks / self.impressions if self.impressions else 0.0
        self.ndcg = self.ndcg_sum / self.lists
        self.legacy_ndcg = self.legacy_ndcg_sum / self.lists


@dataclass
class SimulationReport:
    start: date
    days: int
    requests: int = 0
    events: int = 0                                  # events the simulator produced
    by_type: dict[str, int] = field(default_factory=dict)
    exploration_requests: int = 0
    late_events: int = 0
    pod_impressions: int = 0                         # impressions the serving pods logged themselves
    pod_impressions_dropped: int = 0                 # ... and dropped (buffer full / Kafka failing) meanwhile
    per_day: dict[str, DayStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def day(self, day: date) -> DayStats:
        return self.per_day.setdefault(str(day), DayStats(str(day)))


def day_table(stats: list[DayStats]) -> list[str]:
    """The per-day lines: who served, online CTR, ground-truth NDCG@10 served vs the legacy policy's."""
    lines = [f"{'day':<10}  {'lists':>6}  {'CTR':>6}  {'NDCG@10':>7}  {'legacy':>7}  served by"]
    for s in stats:
        served = ", ".join(f"{v} {n:,}" for v, n in sorted(s.by_version.items()))
        lines.append(f"{s.day:<10}  {s.lists:>6,}  {s.ctr:>6.3f}  {s.ndcg:>7.3f}  {s.legacy_ndcg:>7.3f}  {served}")
    return lines


class ArrivalQueue:
    """Events waiting to reach Kafka: each day releases, in arrival order, those that arrived before it ended."""

    def __init__(self) -> None:
        self.pending: list[Record] = []

    def release(self, records: list[Record], until_ms: int | None) -> list[Record]:
        """Queue `records`, then take out those arriving before `until_ms` (None: everything queued)."""
        self.pending.extend(records)
        self.pending.sort()
        cut = len(self.pending) if until_ms is None else bisect.bisect_left(self.pending, until_ms,
                                                                             key=lambda r: r.arrival_ms)
        released, self.pending = self.pending[:cut], self.pending[cut:]
        return released


class Simulator:
    """Generates each day's requests, impressions and outcomes, in arrival order.

    With a `ranker` (the serving pods), each request's candidates are ranked by it and the simulated
    users respond to that order; its impressions are the ranker's to log, so only the outcomes are
    produced here. While it has no model (None), the legacy policy ranks and its impressions are produced.
    """

    def __init__(self, settings: Settings, *, start: date, days: int, events_per_day: int, seed: int | None = None,
                 ranker: Ranker | None = None):
        cfg = settings.simulate if seed is None else settings.simulate.model_copy(update={"seed": seed})
        self.cfg = cfg
        self.start = start
        self.days = days
        self.events_per_day = events_per_day
        self.world = World.build(cfg, tuple(settings.events.tenants), days)
        self.ids = Ids(self.world)
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.t0 = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        self._surfaces = list(SURFACE_SHARE)
        self._devices = list(DEVICE_SHARE)
        self._items_by_tenant = [np.flatnonzero(self.world.item_tenant == t) for t in range(len(self.world.tenants))]
        self._activity = self.world.user_activity / self.world.user_activity.sum()
        self.ranker = ranker
        self._late_max_hours = LATE_MAX_HOURS[cfg.traffic]
        self._arrivals = ArrivalQueue()

    def records(self, report: SimulationReport) -> Iterator[Record]:
        """All events of all days, sorted by arrival; late events are held back until they arrive."""
        arrivals = ArrivalQueue()
        for day in range(self.days):
            yield from arrivals.release(self._day(day, report), self._release_until(day))

    def day_records(self, day: int, report: SimulationReport) -> list[Record]:
        """One day's events in arrival order, for stepping day by day (the closed loop); days in order.

        Steady: the day's late arrivals included (they reach Kafka after the day ends), so the day's retrain
        sees every event of the day. Bursty: what arrives after the day ends is held back and comes with the
        day it arrives in, as in production, where an hour can get events two days after it was validated.
        """
        if self.cfg.traffic == "steady":
            return sorted(self._day(day, report))
        return self._arrivals.release(self._day(day, report), self._release_until(day))

    def _release_until(self, day: int) -> int | None:
        """The end of the day in ms, or None on the last day: nothing is left pending when the simulation ends."""
        if day == self.days - 1:
            return None
        return int((self.t0 + timedelta(days=day + 1)).timestamp() * 1000)

    def _traffic(self, day: int, n_requests: int) -> DayTraffic:
        """Steady draws from the simulator's generator, as it always did; bursty from a generator of its own."""
        if self.cfg.traffic == "steady":
            return steady_day(self.rng, n_requests)
        return bursty_day(self.cfg.seed, day, n_requests)

    def _day(self, day: int, report: SimulationReport) -> list[Record]:
        cfg, w, rng = self.cfg, self.world, self.rng
        per_request = cfg.list_size * (1 + OUTCOMES_PER_IMPRESSION)
        n_requests = max(1, round(self.events_per_day / per_request))
        day_start = self.t0 + timedelta(days=day)
        day_offset_s = day * 86400
        users = rng.choice(len(w.user_tenant), n_requests, p=self._activity)
        traffic = self._traffic(day, n_requests)  # here, between users and surfaces: steady's draws keep their order
        seconds = traffic.seconds
        surfaces = rng.choice(len(self._surfaces), n_requests, p=list(SURFACE_SHARE.values()))
        devices = rng.choice(len(self._devices), n_requests, p=list(DEVICE_SHARE.values()))
        explore = rng.random(n_requests) < cfg.exploration_share
        out: list[Record] = []
        date_tag = day_start.strftime("%Y%m%d")
        stats = report.day(day_start.date())
        for r in range(n_requests):
            u = int(users[r])
            now_s = day_offset_s + seconds[r]
            pool = self._items_by_tenant[w.user_tenant[u]]
            pool = pool[w.item_created[pool] <= now_s]
            if len(pool) == 0:
                continue
            k = min(cfg.list_size, len(pool))
            cand = rng.choice(pool, min(len(pool), 3 * k), replace=False)
            # The logged (production) policy: popularity with noise, a weak topic hint.
            logged = np.log(w.item_popularity[cand]) + 0.3 * w.user_prefs[u, w.item_topic[cand]] + rng.normal(0, 0.5, len(cand))
            legacy = cand[np.argsort(-logged)][:k]
            if explore[r]:
                legacy = rng.permutation(legacy)
            surface = self._surfaces[surfaces[r]]
            request_id = f"req-{date_tag}-{r:07d}"
            base = {
                "tenant_id": w.tenants[w.user_tenant[u]],
                "user_id": self.ids.user(u),
                "request_id": request_id,
                "surface": surface,
                "device": self._devices[devices[r]],
                "query": f"topic-{int(np.argmax(w.user_prefs[u]))}" if surface == "search" else None,
                "schema_version": SCHEMA_VERSION,
            }
            ts = day_start + timedelta(seconds=float(seconds[r]))
            ranked = self._rank(base, ts, cand, k)
            shown, version, shuffled = (legacy, None, bool(explore[r])) if ranked is None else ranked
            report.exploration_requests += shuffled
            k = len(shown)
            positions = np.arange(1, k + 1)
            util = w.utility(u, shown)
            gains = _sigmoid(util - 1.0)  # = true_gain(w, u, shown)
            p_click = examination(surface, positions) * gains * traffic.click_factor  # above 1: a sure click
            clicks = rng.random(k) < p_click
            pool_gains = true_gain(w, u, cand)
            stats.add(version=version or LEGACY, impressions=k, clicks=int(clicks.sum()),
                      ndcg=ndcg_at_k(gains, pool_gains), legacy_ndcg=ndcg_at_k(true_gain(w, u, legacy), pool_gains))
            for j, item in enumerate(shown):
                item_base = {**base, "item_id": self.ids.item(int(item)),
                             "author_id": self.ids.author(int(w.item_author[item])), "position": j + 1}
                n = len(out)
                if version is None:
                    out.append(self._record(report, {**item_base, "explore": shuffled}, "impression", ts, n))
                else:  # the pod logged this impression itself
                    report.pod_impressions += 1
                if clicks[j]:
                    t_click = ts + timedelta(seconds=float(rng.exponential(8.0)) + 1)
                    out.append(self._record(report, item_base, "click", t_click, n + 1))
                    dwell = int(rng.lognormal(9.5 + 0.5 * util[j], 0.6))
                    out.append(self._record(report, item_base, "dwell", t_click + timedelta(milliseconds=dwell),
                                            n + 2, dwell_ms=dwell))
                    if rng.random() < 0.35 * _sigmoid(util[j] - 1.5):
                        out.append(self._record(report, item_base, "like", t_click + timedelta(seconds=3), n + 3))
                    if rng.random() < 0.15 * _sigmoid(util[j] - 2.0):
                        out.append(self._record(report, item_base, "share", t_click + timedelta(seconds=5), n + 4))
                elif rng.random() < 0.03 * _sigmoid(-util[j]):
                    out.append(self._record(report, item_base, "hide", ts + timedelta(seconds=2), n + 1))
        report.requests += n_requests
        return out

    def _rank(self, base: dict, ts: datetime, cand: np.ndarray, k: int) -> tuple[np.ndarray, str, bool] | None:
        """Ask the ranker for the top k of the candidates: (items shown, model version, explore), or None."""
        if self.ranker is None:
            return None
        w, ids = self.world, self.ids
        body = {key: base[key] for key in ("tenant_id", "user_id", "surface", "device", "request_id")}
        if base["query"] is not None:
            body["query"] = base["query"]
        body.update(ts=format_ts(ts), limit=k,
                    candidates=[{"item_id": ids.item(int(i)), "author_id": ids.author(int(w.item_author[i]))}
                                for i in cand])
        ranked = self.ranker(body)
        if ranked is None:
            return None
        return np.array([ids.item_index[i] for i in ranked.item_ids]), ranked.model_version, ranked.explore

    def _record(self, report: SimulationReport, item_base: dict, event_type: str, ts: datetime, n: int,
                dwell_ms: int | None = None) -> Record:
        event = {
            "event_id": f"{item_base['request_id']}-p{item_base['position']:03d}-{event_type}",
            "event_ts": format_ts(ts),
            "event_type": event_type,
            "dwell_ms": dwell_ms,
            **item_base,
        }
        delay_ms = int(self.rng.exponential(1500)) + 50
        if self.rng.random() < self.cfg.late_share:
            delay_ms += int(self.rng.uniform(1, self._late_max_hours) * 3600_000)
            report.late_events += 1
        report.events += 1
        report.by_type[event_type] = report.by_type.get(event_type, 0) + 1
        arrival = int(ts.timestamp() * 1000) + delay_ms
        return Record(arrival, item_base["user_id"].encode(), to_json(event))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def produce(settings: Settings, records: Iterator[Record], *, topic: str | None = None,
            on_sent: Callable[[int], None] | None = None) -> int:
    """Send records to Kafka with their arrival time as the record timestamp; returns the count."""
    from feedloop.core.streams import producer

    prod = producer(settings.kafka)
    sent = 0
    try:
        for rec in records:
            prod.send(topic or settings.kafka.topic, key=rec.key, value=rec.value, timestamp_ms=rec.arrival_ms)
            sent += 1
            if on_sent and sent % 1000 == 0:
                on_sent(1000)
        prod.flush(timeout=120)
    finally:
        prod.close(timeout=30)
    if on_sent:
        on_sent(sent % 1000)
    return sent


def write_catalog(settings: Settings, sim: Simulator) -> str:
    """Publish the simulated item catalog to the lake (what a catalog service would export)."""
    import io

    import pyarrow.parquet as pq

    from feedloop.core.layout import CATALOG_ITEMS_KEY
    from feedloop.core.storage import ObjectStore

    buf = io.BytesIO()
    pq.write_table(sim.world.catalog(start=sim.start, ids=sim.ids), buf, compression="zstd")
    ObjectStore.from_settings(settings).put(settings.s3.lake_bucket, CATALOG_ITEMS_KEY, buf.getvalue())
    return CATALOG_ITEMS_KEY


def run(settings: Settings, *, start: date, days: int, events_per_day: int, seed: int | None = None,
        ground_truth: Path | None = None, progress: bool | None = None,
        serving_urls: list[str] | None = None) -> SimulationReport:
    """Simulate `days` days from `start` and produce every event to Kafka.

    With `serving_urls` the users' feeds come from those pods (round-robin; the legacy policy while
    they have no model) and the pods log the impressions they served.
    """
    from tqdm import tqdm

    from feedloop.serving.client import RankingClient

    client = RankingClient(serving_urls) if serving_urls else None
    sim = Simulator(settings, start=start, days=days, events_per_day=events_per_day, seed=seed,
                    ranker=client.rank if client else None)
    report = SimulationReport(start=start, days=days)
    write_catalog(settings, sim)
    if ground_truth is not None:
        sim.world.save(ground_truth, start=start, ids=sim.ids)
    show = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    try:
        dropped = client.dropped() if client else 0
        with tqdm(total=days * events_per_day, unit="ev", disable=not show, desc="simulate") as bar:
            produce(settings, sim.records(report), on_sent=bar.update)
        if client:
            client.drain()
            report.pod_impressions_dropped = client.dropped() - dropped
    finally:
        if client:
            client.close()
    report.seconds = time.perf_counter() - t0
    return report
