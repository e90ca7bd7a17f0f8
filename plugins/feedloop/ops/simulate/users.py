"""The simulated users: each day's requests, the lists they are shown, and their clicks, as Kafka records.

Why: clicks depend on position (position bias) as well as on the world's true utility, so offline and
online metrics can be checked against the truth that generated them; with a ranker (the serving pods)
the users respond to the order the pods chose, which closes the loop.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np

from feedloop.contract.events import SCHEMA_VERSION, format_ts, to_json
from feedloop.core.config import Settings
from feedloop.ops.simulate.arms import POOL, RECOMMEND, takes_recommend
from feedloop.ops.simulate.pools import DayPools
from feedloop.ops.simulate.report import LEGACY, SimulationReport
from feedloop.ops.simulate.traffic import LATE_MAX_HOURS, DayTraffic, bursty_day, steady_day
from feedloop.ops.simulate.world import Ids, World, ndcg_at_k, sigmoid, true_gain
from feedloop.serving.client import Ranked, RankingError

SURFACE_SHARE = {"feed": 0.6, "search": 0.15, "related": 0.15, "notifications": 0.1}
DEVICE_SHARE = {"ios": 0.4, "android": 0.4, "web": 0.2}
# Examination probability at position p is (1/p) ** eta[surface]: search users scan less deeply.
POSITION_BIAS_ETA = {"feed": 0.8, "search": 1.1, "related": 0.9, "notifications": 0.6}
OUTCOMES_PER_IMPRESSION = 0.3  # rough, used only to size the number of requests per day
# A ranker answers a POST /rank body with the order shown, or None (no model yet: the legacy policy shows it);
# a recommender a POST /recommend body, or None (nothing to recommend with yet: the request goes to the ranker).
Ranker = Callable[[dict], Ranked | None]


def examination(surface: str, positions: np.ndarray) -> np.ndarray:
    return (1.0 / positions) ** POSITION_BIAS_ETA[surface]


@dataclass(order=True)
class Record:
    """One event as it will reach Kafka: arrival time (the record timestamp), key and JSON value."""

    arrival_ms: int
    key: bytes = field(compare=False)
    value: bytes = field(compare=False)


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
    With a `recommender` too, a `recommend_share` of the requests (by request id) ask it for a list from the
    whole catalog instead, falling back to the ranker when it answers None; every list is then also judged
    against the catalog, per arm (arms.py).
    """

    def __init__(self, settings: Settings, *, start: date, days: int, events_per_day: int, seed: int | None = None,
                 ranker: Ranker | None = None, recommender: Ranker | None = None, recommend_share: float = 0.0):
        if recommender is not None and not 0 < recommend_share <= 1:
            raise ValueError(f"recommend_share must be in (0, 1] with a recommender, not {recommend_share}")
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
        self.recommender = recommender
        self.recommend_share = recommend_share
        self._late_max_hours = LATE_MAX_HOURS[cfg.traffic]
        self._arrivals = ArrivalQueue()
        self.pools: dict[str, DayPools] = {}  # day -> every request's candidate pool (the ground-truth audit's input)

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
        self.pools[day_start.date().isoformat()] = pools = DayPools()
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
            logged = (np.log(w.item_popularity[cand]) + 0.3 * w.user_prefs[u, w.item_topic[cand]]
                      + rng.normal(0, 0.5, len(cand)))
            legacy = cand[np.argsort(-logged)][:k]
            if explore[r]:  # as the pods explore: a random k of the candidates, in random order
                legacy = rng.permutation(cand)[:k]
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
            pools.add(request_id=request_id, user=u, surface=surface, device=base["device"], ts=ts.timestamp(),
                      pool=cand)
            recommended = self._recommend(base, ts, k)
            ranked = recommended or self._rank(base, ts, cand, k)
            shown, version, shuffled = (legacy, None, bool(explore[r])) if ranked is None else ranked
            report.exploration_requests += shuffled
            k = len(shown)
            positions = np.arange(1, k + 1)
            util = w.utility(u, shown)
            gains = sigmoid(util - 1.0)  # = true_gain(w, u, shown)
            p_click = examination(surface, positions) * gains * traffic.click_factor  # above 1: a sure click
            clicks = rng.random(k) < p_click
            pool_gains = true_gain(w, u, cand)
            judged = recommended is None  # a /recommend list had no pool: its arm judges it on the catalog
            stats.add(version=version or LEGACY, impressions=k, clicks=int(clicks.sum()),
                      ndcg=ndcg_at_k(gains, pool_gains) if judged else None,
                      legacy_ndcg=ndcg_at_k(true_gain(w, u, legacy), pool_gains) if judged else None)
            if self.recommender is not None:
                stats.arm(POOL if judged else RECOMMEND).add(shown, gains, pool, true_gain(w, u, pool))
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
                    if rng.random() < 0.35 * sigmoid(util[j] - 1.5):
                        out.append(self._record(report, item_base, "like", t_click + timedelta(seconds=3), n + 3))
                    if rng.random() < 0.15 * sigmoid(util[j] - 2.0):
                        out.append(self._record(report, item_base, "share", t_click + timedelta(seconds=5), n + 4))
                elif rng.random() < 0.03 * sigmoid(-util[j]):
                    out.append(self._record(report, item_base, "hide", ts + timedelta(seconds=2), n + 1))
        report.requests += n_requests
        return out

    def _rank(self, base: dict, ts: datetime, cand: np.ndarray, k: int) -> tuple[np.ndarray, str, bool] | None:
        """Ask the ranker for the top k of the candidates: (items shown, model version, explore), or None."""
        if self.ranker is None:
            return None
        w, ids = self.world, self.ids
        body = _request_body(base, ts, k)
        body["candidates"] = [{"item_id": ids.item(int(i)), "author_id": ids.author(int(w.item_author[i]))}
                              for i in cand]
        ranked = self.ranker(body)
        if ranked is None:
            return None
        return np.array([ids.item_index[i] for i in ranked.item_ids]), ranked.model_version, ranked.explore

    def _recommend(self, base: dict, ts: datetime, k: int) -> tuple[np.ndarray, str, bool] | None:
        """Ask the recommender for k items of the whole catalog, if the request is in its arm: (items shown,
        model version, explore), or None (not in the arm, or it has nothing to recommend with yet)."""
        if self.recommender is None or not takes_recommend(base["request_id"], self.recommend_share):
            return None
        listed = self.recommender(_request_body(base, ts, k))
        if listed is None:
            return None
        index, tenant = self.ids.item_index, self.world.user_tenant[self.ids.user_index[base["user_id"]]]
        unknown = [i for i in listed.item_ids if i not in index or self.world.item_tenant[index[i]] != tenant]
        if unknown:
            raise RankingError(f"/recommend for {base['user_id']} (request {base['request_id']}) listed items "
                               f"that are not in the tenant's catalog: {unknown[:5]}")
        return np.array([index[i] for i in listed.item_ids]), listed.model_version, listed.explore

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


def _request_body(base: dict, ts: datetime, k: int) -> dict:
    """What a feed service sends the pods for a request, /rank and /recommend alike (before any candidates)."""
    body = {key: base[key] for key in ("tenant_id", "user_id", "surface", "device", "request_id")}
    if base["query"] is not None:
        body["query"] = base["query"]
    return body | {"ts": format_ts(ts), "limit": k}
