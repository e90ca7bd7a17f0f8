"""The closed loop for real: simulated users get their feeds from two uvicorn pods, which log the impressions.

Three days are served by the legacy policy (no model is live: the pods answer 503), then the real
pipeline steps of the retrain DAG turn them into a model for the simulator's own world (ingest, build,
train, evaluate, export, gate, register, flip), the pods load it, and the fourth day is served by it.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import orjson
import pytest

from feedloop.contract import impression_lists
from feedloop.features import dataset
from feedloop.ops import loop_audit
from feedloop.promotion import steps as promotion
from feedloop.promotion.flip import flip_pointer
from feedloop.promotion.registration import register_candidate
from feedloop.ops import simulate
from feedloop.ops.simulate.pools import DayPools
from feedloop.training import train
from feedloop.ingest import sink
from feedloop.serving.client import RankingClient
from feedloop.promotion.registry import Registry
from feedloop.serving.pods import Pods
from feedloop.core.process import port_in_use
from feedloop.core.storage import ObjectStore
from tests.integration.test_simulate_roundtrip import _read_all

pytestmark = pytest.mark.integration

START = date(2025, 6, 1)
DAYS = 4            # 3 days make the first training window; the 4th is served by the model
EVENTS_PER_DAY = 3000


@pytest.fixture(scope="module")
def loop(embedded, tmp_path_factory):
    from feedloop.core.streams import ensure_topic

    suffix = uuid.uuid4().hex[:8]
    topic, lake_bucket, models_bucket = f"loop-{suffix}", f"lake-{suffix}", f"models-{suffix}"
    ensure_topic(embedded.kafka, topic=topic)
    store = ObjectStore.from_settings(embedded)
    store.ensure_bucket(lake_bucket)
    store.ensure_bucket(models_bucket)
    state = tmp_path_factory.mktemp("loop")
    settings = embedded.model_copy(update={
        "state_dir": state,
        "s3": embedded.s3.model_copy(update={"lake_bucket": lake_bucket, "models_bucket": models_bucket}),
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "retrain": embedded.retrain.model_copy(update={"start_date": START}),
        "train": embedded.train.model_copy(update={"num_boost_round": 60, "min_boost_round": 20, "refit": True}),
        "promotion": embedded.promotion.model_copy(update={"unused_half": True}),
        # the exact topics in the catalog, the world this test's weak-then-better models were designed on: with
        # the default coarse categories and no embeddings (nothing runs embed_catalog here) a 4-day model is not
        # reliably better than two stumps
        "simulate": embedded.simulate.model_copy(update={"catalog_categories": 0}),
    })
    pods = Pods(settings, port=_two_free_ports(), replicas=2, env={
        "FEEDLOOP_S3__MODELS_BUCKET": models_bucket, "FEEDLOOP_KAFKA__TOPIC": topic, "FEEDLOOP_STATE_DIR": str(state),
        "FEEDLOOP_SERVING__CACHE_DIR": str(state / "cache"), "FEEDLOOP_SERVING__POLL_INTERVAL_S": "0.3",
        "FEEDLOOP_SERVING__SIMULATED_TIME": "true"})
    pods.start()
    client = RankingClient(pods.urls)
    try:
        sim = simulate.Simulator(settings, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY, seed=5,
                                 ranker=client.rank)
        simulate.write_catalog(settings, sim)
        report = simulate.SimulationReport(START, DAYS)
        produced: dict[int, list[dict]] = {}
        for d in range(DAYS - 1):
            produced[d] = _step(settings, sim, client, d, report)
        # The first model is deliberately weak (two stumps), so the second candidate is clearly better.
        weak = settings.model_copy(update={"train": settings.train.model_copy(
            update={"num_boost_round": 2, "min_boost_round": 1, "num_leaves": 2})})
        retrain = _retrain(weak, START + timedelta(days=DAYS - 2))
        version = retrain["flip"]["version"]
        pods.wait_for(version, timeout=60)
        dropped = client.dropped()
        produced[DAYS - 1] = _step(settings, sim, client, DAYS - 1, report)
        dropped = client.dropped() - dropped
        kafka = [e for m in _read_all(settings, topic) for e in impression_lists.events_in(m.value)]
        # The day the first model served is retrained: the second candidate. A day here holds ~150 judged lists,
        # too few for a decisive interval, so an inconclusive verdict promotes (the default holds).
        second = _retrain(settings, START + timedelta(days=DAYS - 1), overrides={"inconclusive": "promote"})
        yield SimpleNamespace(settings=settings, report=report, produced=produced, version=version, dropped=dropped,
                              kafka=kafka, sim=sim, retrain=retrain, second=second)
    finally:
        client.close()
        pods.stop()


def _two_free_ports() -> int:
    """Below the kernel's ephemeral range (32768+), where outgoing connections may take a port we just probed."""
    rng = random.Random()
    return next(p for p in (rng.randrange(20_000, 30_000) for _ in range(200))
                if not port_in_use(p) and not port_in_use(p + 1))


def _step(settings, sim, client, d, report) -> list[dict]:
    """One simulated day through the pods; what the simulator itself produced."""
    records = sim.day_records(d, report)
    simulate.produce(settings, iter(records))
    client.drain()
    return [orjson.loads(r.value) for r in records]


FIRST_MODEL_GATE = {"floors": {"auc": 0.0, "ndcg@10": 0.0}}


def _retrain(settings, day: date, *, overrides: dict | None = FIRST_MODEL_GATE) -> dict:
    """What retrain_ranker runs for `day`, step by step through the library; its evaluate / gate / flip outputs
    as their XComs (the dicts the demo collects).

    overrides: the first model only has to be valid (one thin day of history; the gate itself is tested in
    test_promotion.py); None = the configured gate."""
    assert sink.run(settings).records > 0  # one bounded run reads until the topic is drained
    dataset.build(settings, end=day + timedelta(days=1))
    train.train(settings, day=day)
    ds = day.isoformat()
    evaluation = promotion.evaluate_candidate(ds=ds, settings=settings)
    promotion.export_candidate(ds=ds, settings=settings)
    decision = promotion.gate_candidate(ds=ds, overrides=overrides, settings=settings)
    refit = promotion.refit_candidate(ds=ds, settings=settings)
    registered = register_candidate(ds=ds, settings=settings)
    if not decision.promotable:
        return {"evaluate": evaluation.to_dict(), "gate": decision.to_dict(), "refit": refit}
    assert registered.serving_version == refit["refit"] != decision.version  # the refit serves
    flip = flip_pointer(ds=ds, gate=decision, promoted_by="test_closed_loop", settings=settings)
    return {"evaluate": evaluation.to_dict(), "gate": decision.to_dict(), "flip": flip.to_dict(), "refit": refit}


def _stats(loop, d: int) -> simulate.DayStats:
    return loop.report.per_day[str(START + timedelta(days=d))]


def test_with_no_model_live_the_legacy_policy_serves_and_the_simulator_logs_its_impressions(loop):
    for d in range(DAYS - 1):
        stats = _stats(loop, d)
        impressions = [e for e in loop.produced[d] if e["event_type"] == "impression"]
        assert stats.lists > 100 and stats.by_version == {simulate.LEGACY: stats.lists}
        assert len(impressions) == stats.impressions and not any(e.get("model_version") for e in impressions)
        assert stats.ndcg == pytest.approx(stats.legacy_ndcg)


def test_outcomes_of_a_served_day_follow_the_impressions_the_pods_logged(loop):
    day = DAYS - 1
    stats = _stats(loop, day)
    mine = loop.produced[day]
    assert mine and not any(e["event_type"] == "impression" for e in mine)  # the pods logged those
    requests = {e["request_id"] for e in mine}
    logged = {(e["request_id"], e["item_id"]): e for e in loop.kafka
              if e["event_type"] == "impression" and e["request_id"].startswith(f"req-{_tag(day)}-")}
    assert loop.dropped == 0
    assert len(logged) == stats.impressions == loop.report.pod_impressions
    assert {e.get("model_version") for e in logged.values()} == {loop.version}
    for e in mine:
        shown = logged[(e["request_id"], e["item_id"])]
        assert shown["position"] == e["position"] and shown["event_ts"] < e["event_ts"]
    assert requests <= {k[0] for k in logged}


def test_the_report_counts_add_up_per_version_and_per_day(loop):
    served = _stats(loop, DAYS - 1)
    assert served.by_version == {loop.version: served.lists}
    assert all(sum(_stats(loop, d).by_version.values()) == _stats(loop, d).lists for d in range(DAYS))
    lists_in_kafka = {e["request_id"] for e in loop.kafka if e["event_type"] == "impression"}
    assert sum(_stats(loop, d).lists for d in range(DAYS)) == len(lists_in_kafka)
    clicks = sum(1 for d in range(DAYS) for e in loop.produced[d] if e["event_type"] == "click")
    assert sum(_stats(loop, d).clicks for d in range(DAYS)) == clicks
    assert 0 < served.ndcg <= 1 and 0 < served.legacy_ndcg <= 1
    assert served.ctr == pytest.approx(served.clicks / served.impressions)
    # exploration lists (shuffled by the legacy policy or by a pod) are counted whoever shuffled them
    explored = {e["request_id"] for e in loop.kafka if e["event_type"] == "impression" and e.get("explore")}
    assert loop.report.exploration_requests == len(explored) > 0


def test_the_pods_serve_the_registered_live_version(loop):
    assert Registry.from_settings(loop.settings).history()[0]["version"] == loop.version
    assert Counter(e.get("model_version") for e in loop.kafka if e["event_type"] == "impression") == {
        None: sum(_stats(loop, d).impressions for d in range(DAYS - 1)), loop.version: _stats(loop, DAYS - 1).impressions}


def test_the_ground_truth_audit_judges_every_list_of_the_first_candidates_day(loop):
    day = DAYS - 2
    audit = _audit(loop, day, loop.retrain)
    assert (audit.candidate, audit.champion, audit.decision) == (loop.retrain["evaluate"]["version"], None, "promoted")
    assert audit.champion_ndcg is None and audit.agreement is None  # a first model has no champion to be judged against
    assert audit.shown_lists == _stats(loop, day).lists  # every request of the day, its ids mapped back to the world
    assert 0.3 < audit.candidate_shown_ndcg < 1 and 0.3 < audit.logged_ndcg < 1
    # the pools need the features the pods would have served that day: no run before it built a snapshot
    assert (audit.lists, audit.candidate_ndcg) == (0, None)


def test_the_pool_audit_reproduces_what_the_pods_served(loop):
    """The live model ranking the last day's pools offline picks what the pods served: on every request the pods
    did not shuffle for exploration, the pool audit's NDCG@10 is the served list's."""
    day = DAYS - 1
    pools = loop.sim.pools[str(START + timedelta(days=day))]
    shown: dict[str, list[tuple[int, str]]] = {}
    for e in loop.kafka:
        if e["event_type"] == "impression" and e["request_id"].startswith(f"req-{_tag(day)}-"):
            shown.setdefault(e["request_id"], []).append((e["position"], e["item_id"], bool(e.get("explore"))))
    ranked = [r for r in range(len(pools)) if not shown[pools.request_ids[r]][0][2]]
    assert len(ranked) > 0.8 * len(pools)
    subset = DayPools()
    for r in ranked:
        subset.add(request_id=pools.request_ids[r], user=pools.users[r], surface=pools.surfaces[r],
                   device=pools.devices[r], ts=pools.ts[r], pool=pools.pool(r))
    registry = Registry.from_settings(loop.settings)
    live = {"live": (registry.read(loop.version, "model.txt").decode(),
                     registry.manifest(loop.version)["feature_manifest"])}
    audited = loop_audit.pool_ground_truth(store=ObjectStore.from_settings(loop.settings), settings=loop.settings,
                                           day=START + timedelta(days=day), pools=subset, models=live,
                                           world=loop.sim.world, ids=loop.sim.ids)
    world, ids = loop.sim.world, loop.sim.ids
    served = []
    for r in ranked:
        items = np.array([ids.item_index[i] for _, i, _ in sorted(shown[pools.request_ids[r]])])
        served.append(simulate.ndcg_at_k(simulate.true_gain(world, pools.users[r], items),
                                         simulate.true_gain(world, pools.users[r], pools.pool(r))))
    assert audited.lists == len(ranked)
    assert audited.ndcg["live"] == pytest.approx(float(np.mean(served)), abs=1e-9)


def _audit(loop, day: int, retrain: dict):
    when = START + timedelta(days=day)
    return loop_audit.audit_day(settings=loop.settings, day=when, world=loop.sim.world, ids=loop.sim.ids,
                                retrain=retrain, pools=loop.sim.pools[str(when)])


def _tag(d: int) -> str:
    return (START + timedelta(days=d)).strftime("%Y%m%d")


def test_the_refit_trains_on_the_whole_window_but_never_on_exploration_lists(loop):
    """Exploration lists are where later candidates are compared with the model that serves: a refit that had fit
    them would be judged in-sample (this test's second candidate was held as 0.11 worse when it did)."""
    day = START + timedelta(days=DAYS - 2)
    rows = {s: train.load_split(loop.settings, day, s).num_rows for s in dataset.SPLITS}
    explored = {s: train.load_split(loop.settings, day, s, explore=True).num_rows for s in dataset.SPLITS}
    assert explored["holdout"] > 0 and explored["train"] == explored["valid"] == 0
    assert loop.retrain["refit"]["rows"] == sum(rows.values()) - explored["holdout"]


def test_a_better_candidate_is_promoted_after_the_first_model(loop):
    """The day the first model served is judged without its bias: the debiased comparison does not find the
    candidate worse on lists the champion ranked itself, it goes live, and the hidden utility confirms it was
    better on that day's lists."""
    second = loop.second
    assert second["evaluate"]["champion"] == loop.version, second  # the model that served that day
    assert second["gate"]["comparison"]["verdict"] in ("better", "not worse", "inconclusive"), second["gate"]
    assert second["gate"]["promotable"] and second["flip"]["flipped"], second["gate"]
    audit = _audit(loop, DAYS - 1, second)
    assert audit.lists == _stats(loop, DAYS - 1).lists  # judged on every request's whole pool
    assert audit.decision == "promoted" and audit.candidate_ndcg > audit.champion_ndcg
    assert Registry.from_settings(loop.settings).live().version == second["flip"]["version"]
    # the first model was never gated on a half of the exploration lists: half 0; the next candidate gets half 1
    paired = Registry.from_settings(loop.settings).read_json(second["gate"]["version"], "metrics.json")["paired"]
    assert paired["judged_on"].startswith("half 0 of the exploration lists" if paired["gated"] == "explore"
                                          else "snips-ipw on all lists: only"), paired["judged_on"]
    assert paired["half"] == (0 if paired["gated"] == "explore" else None)
