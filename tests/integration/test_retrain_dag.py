"""The whole daily DAG on the embedded stack: ingest -> validate -> build -> train -> evaluate -> export
-> gate -> register -> flip, through `airflow dags test`; then a shuffled-label candidate is held."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedloop.content.item_embeddings import load_item_embeddings
from feedloop.features import dataset
from feedloop.features import snapshots as feature_snapshots
from feedloop.promotion import steps as promotion
from feedloop.core.errors import PromotionBlocked
from feedloop.promotion.flip import flip_pointer
from feedloop.promotion.registration import register_candidate
from feedloop.ops import simulate
from feedloop.training import train
from feedloop.ingest import sink
from feedloop.promotion.registry import Registry
from feedloop.core import layout
from feedloop.core.storage import ObjectStore
from tests.support.kafka_helpers import deadletters, lake_rows

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

START = date(2025, 3, 1)
DAYS = 4
EVENTS_PER_DAY = 4000  # enough for LambdaRank on 3 days; more only makes every step (GX, build, train) slower
# small models (the gate and export do not depend on the size; the runs of 2 shared cores do)
# train.refit on: the DAG's refit step (off by default) is exercised end to end here
TRAIN_ENV = {"FEEDLOOP_TRAIN__NUM_BOOST_ROUND": "40", "FEEDLOOP_TRAIN__MIN_BOOST_ROUND": "20", "FEEDLOOP_TRAIN__REFIT": "true"}


@pytest.fixture(scope="module")
def isolated(embedded):
    """Own topic, lake and models buckets, so baselines and the live pointer are this module's alone."""
    from feedloop.core.streams import ensure_topic

    suffix = uuid.uuid4().hex[:8]
    topic = f"retrain-{suffix}"
    ensure_topic(embedded.kafka, topic=topic)
    lake_bucket, models_bucket = f"lake-{suffix}", f"models-{suffix}"
    store = ObjectStore.from_settings(embedded)
    store.ensure_bucket(lake_bucket)
    store.ensure_bucket(models_bucket)
    settings = embedded.model_copy(update={
        "s3": embedded.s3.model_copy(update={"lake_bucket": lake_bucket, "models_bucket": models_bucket}),
        "kafka": embedded.kafka.model_copy(update={"topic": topic}),
        "retrain": embedded.retrain.model_copy(update={"start_date": START}),
        "train": embedded.train.model_copy(update={"num_boost_round": 40, "min_boost_round": 20, "refit": True}),
    })
    env = {"FEEDLOOP_S3__LAKE_BUCKET": lake_bucket, "FEEDLOOP_S3__MODELS_BUCKET": models_bucket,
           "FEEDLOOP_KAFKA__TOPIC": topic, "FEEDLOOP_RETRAIN__START_DATE": START.isoformat(), **TRAIN_ENV}
    return settings, env


@pytest.fixture(scope="module")
def produced(isolated) -> list[simulate.Record]:
    """The catalog and every simulated event, sent to the module's topic; the records as sent."""
    settings, _ = isolated
    sim = simulate.Simulator(settings, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY, seed=5)
    simulate.write_catalog(settings, sim)
    records = list(sim.records(simulate.SimulationReport(START, DAYS)))
    assert simulate.produce(settings, iter(records), topic=settings.kafka.topic) == len(records)
    return records


@pytest.fixture(scope="module")
def ran(isolated, produced, airflow_cli):
    """ingest_engagement once, then retrain_ranker for each day in order (what catchup does)."""
    settings, env = isolated
    result = airflow_cli("dags", "test", "ingest_engagement", "2026-11-20T00:00:00+00:00", env_extra=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = {}
    # Floors off for these runs: the first trained day (one day of history) only has to be a valid model;
    # the gate itself is tested with the config's floors below and in test_promotion.py.
    gate = '{"gate_thresholds": {"floors": {"auc": 0.0, "ndcg@10": 0.0}}}'
    for d in range(DAYS):
        day = (START + timedelta(days=d)).isoformat()
        outputs[day] = airflow_cli("dags", "test", "retrain_ranker", day, "-c", gate, env_extra=env)
    return settings, env, outputs


def test_the_daily_dag_validates_every_day_and_flips_the_pointer_on_a_good_candidate(ran):
    settings, _, outputs = ran
    days = [(START + timedelta(days=d)).isoformat() for d in range(DAYS)]
    log = {day: r.stdout + r.stderr for day, r in outputs.items()}
    for day in days[:2]:  # too little history: validated, training skipped with the reason
        assert outputs[day].returncode == 0, log[day][-3000:]
        assert "min_window_days" in log[day]
    first = days[2]  # the first trained model needs the floors only
    assert outputs[first].returncode == 0, log[first][-3000:]
    registry = Registry.from_settings(settings)
    history = registry.history()
    assert history[0]["version"].startswith(first) and history[0]["previous"] is None
    # The next day is promoted, or held by the gate against that champion (then its run fails and alerts).
    last = days[3]
    live = registry.live()
    if outputs[last].returncode == 0:
        assert live.version.startswith(last) and live.pointer["previous"] == history[0]["version"]
    else:
        assert "blocked" in log[last] and live.version == history[0]["version"]
    metrics = registry.read_json(live.version, "metrics.json")
    manifest = registry.manifest(live.version)
    assert metrics["parity"]["passed"] and live.pointer["sha256"] == manifest["artifacts"]["model.onnx"]["sha256"]
    # What serves is the refit on the whole window, linked to the evaluated twin whose metrics the gate judged.
    twin = registry.manifest(manifest["evaluated_twin"])
    assert twin is not None and twin["gate"]["promotable"] and metrics["version"] == twin["version"]
    assert manifest["refit"]["rows"] > twin["lineage"]["rows"]["train"] and manifest["parity"]["passed"]
    # The retriever task beside them: a version of each trained day in its own registry, live iff its gate passed.
    retrievers = Registry.from_settings(settings, layout.RETRIEVER)
    by_day = {v[:10]: v for v in retrievers.versions()}
    assert sorted(by_day) == days[2:], {d: log[d][-3000:] for d in days[2:]}
    flipped = {entry["version"] for entry in retrievers.history()}
    for version in by_day.values():
        assert (version in flipped) == retrievers.manifest(version)["gate"]["promote"]
    assert retrievers.manifest(by_day[days[2]])["gate"]["estimate"] == "exposure"


def test_a_candidate_trained_on_shuffled_labels_is_held_and_the_pointer_stays(ran):
    settings, _, _ = ran
    registry = Registry.from_settings(settings)
    before = registry.live()
    day = START + timedelta(days=DAYS - 1)
    store = ObjectStore.from_settings(settings)
    bucket = settings.s3.lake_bucket
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for key in [k for k in store.list_keys(bucket, f"datasets/ranker/{day}/split={split}/")]:
            import io

            table = pq.read_table(io.BytesIO(store.get(bucket, key).body))
            perm = rng.permutation(table.num_rows)
            for col in ("label", "label_binary", "weight"):
                table = table.set_column(table.schema.get_field_index(col), col, table[col].take(perm))
            buf = io.BytesIO()
            pq.write_table(table, buf)
            store.put(bucket, key, buf.getvalue())
    train.train(settings, day=day)
    ds = day.isoformat()
    promotion.evaluate_candidate(ds=ds, settings=settings)
    promotion.export_candidate(ds=ds, settings=settings)
    decision = promotion.gate_candidate(ds=ds, settings=settings)
    assert decision.promotable is False, decision
    register_candidate(ds=ds, settings=settings)
    with pytest.raises(PromotionBlocked):
        flip_pointer(ds=ds, gate=decision, promoted_by="test", settings=settings)
    after = registry.live()
    assert after.version == before.version and after.etag == before.etag


def test_the_first_run_embedded_the_catalog_and_the_later_runs_found_nothing_new(ran):
    settings, _, outputs = ran
    ids, matrix = load_item_embeddings(ObjectStore.from_settings(settings), settings.s3.lake_bucket)
    assert len(ids) == settings.simulate.items and matrix.shape == (len(ids), settings.content.dim)
    later = [r.stdout + r.stderr for _, r in sorted(outputs.items())[1:]]
    assert all("item embeddings up to date" in log for log in later)


def test_dataset_build_is_idempotent_for_a_logical_date(ran):
    settings, _, _ = ran
    end = START + timedelta(days=DAYS - 1)
    first = dataset.build(settings, end=end)
    again = dataset.build(settings, end=end)
    assert first.content_hash == again.content_hash and first.rows == again.rows


def test_ingest_of_the_run_landed_every_event(ran, produced):
    settings, _, _ = ran
    assert sink.run(settings).records == 0  # nothing left behind in Kafka
    store = ObjectStore.from_settings(settings)
    rows = lake_rows(store, settings, settings.kafka.topic)
    dead = deadletters(store, settings, settings.kafka.topic)
    sent = Counter(orjson.loads(r.value)["event_id"] for r in produced)
    assert sent.most_common(1)[0][1] == 1, "the simulator sent an event_id twice: the lake would rightly keep one"
    landed = Counter(rows["event_id"].to_pylist())
    missing = sorted(sent.keys() - landed.keys())
    twice = {event_id: n for event_id, n in landed.items() if n > 1}
    assert not missing, f"{len(missing)} of {len(sent)} produced events never landed, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} events landed more than once, e.g. {sorted(twice.items())[:5]}"
    assert dead.num_rows == 0, dead.select(["kafka_partition", "kafka_offset", "reason"]).slice(0, 5).to_pylist()
    # And by offset: every partition's offsets from the first are in the lake once each, with no gap
    # (the pods of the parity test below log into this topic too: their records are offsets as well).
    offsets: dict[int, list[int]] = {}
    for partition, offset in zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist()):
        offsets.setdefault(partition, []).append(offset)
    for partition, landed_offsets in sorted(offsets.items()):
        assert sorted(landed_offsets) == list(range(len(landed_offsets))), (
            f"partition {partition}: {len(landed_offsets)} rows but offsets {len(set(landed_offsets))} distinct, "
            f"up to {max(landed_offsets)}")


def test_every_trained_day_published_its_feature_snapshot_whatever_its_candidate_became(ran):
    settings, _, _ = ran
    store = ObjectStore.from_settings(settings)
    live = feature_snapshots.pointer(store, settings.s3.models_bucket).read().pointer
    history = feature_snapshots.pointer(store, settings.s3.models_bucket).history()
    trained = [(START + timedelta(days=d)) for d in (2, 3)]
    assert [p["snapshots"][p["definition_version"]]["as_of"] for p in history] == [
        (d + timedelta(days=1)).isoformat() for d in trained]
    assert live == history[-1] and live["published_by"].startswith("retrain_ranker ")
    dataset_snapshot = f"datasets/ranker/{trained[-1]}/snapshot/"
    for key in store.list_keys(settings.s3.lake_bucket, dataset_snapshot):
        name = key[len(dataset_snapshot):]
        published = store.get(settings.s3.models_bucket, feature_snapshots.snapshot_key(live["snapshot"], name))
        assert published.body == store.get(settings.s3.lake_bucket, key).body, name
    dataset.build(settings, end=trained[-1] + timedelta(days=1))  # a re-run of the last day publishes nothing new
    again = feature_snapshots.publish(settings, day=trained[-1], by="tests", store=store)
    assert (again.snapshot_id, again.written, again.pointer) == (live["snapshot"], False, "unchanged")


def test_served_scores_of_logged_impressions_equal_lightgbm_on_their_training_rows(ran, tmp_path):
    """Training/serving parity end to end, with a refreshed snapshot: the live version is a day older than
    the newest published snapshot, a pod ranks the snapshot's day with that version and that snapshot, its
    impressions go through Kafka and the sink into the lake, and that day's training rows reproduce its
    features and scores."""
    import io

    import httpx
    import lightgbm as lgb

    from feedloop.features import definitions as features
    from feedloop.contract.events import format_ts
    from feedloop.contract import events
    from feedloop.serving.pods import Pods
    from feedloop.serving.snapshot import Snapshot
    from tests.integration.test_serving import _free_ports

    settings, env, _ = ran
    registry = Registry.from_settings(settings)
    first = registry.history()[0]["version"]  # the first trained day's model, whatever the gate did after it
    if registry.live().version != first:
        registry.commit(registry.plan_rollback(to=first, by="tests", reason="serve with a refreshed snapshot"))
    live = registry.live()
    manifest = registry.manifest(live.version)
    store = ObjectStore.from_settings(settings)
    models = settings.s3.models_bucket
    published = feature_snapshots.pointer(store, models).read().pointer["snapshots"][
        features.definition_version(manifest["feature_manifest"])]
    serve_day = date.fromisoformat(published["as_of"])
    assert serve_day == date.fromisoformat(manifest["logical_date"]) + timedelta(days=2)  # a day fresher than its own
    pods = Pods(settings, port=_free_ports(1), replicas=1, env={**env, "FEEDLOOP_STATE_DIR": str(tmp_path),
                                                             "FEEDLOOP_SERVING__POLL_INTERVAL_S": "0.5",
                                                             "FEEDLOOP_SERVING__SIMULATED_TIME": "true"})
    pods.start()
    try:
        pods.wait_for(live.version, timeout=60)
        deadline = time.monotonic() + 30
        while httpx.get(f"{pods.urls[0]}/version").json()["live"]["features"]["id"] != published["id"]:
            assert time.monotonic() < deadline, httpx.get(f"{pods.urls[0]}/version").json()
            time.sleep(0.3)
        sim = simulate.Simulator(settings, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY, seed=5)
        rng = np.random.default_rng(11)
        served: dict[tuple[str, str], float] = {}
        bodies: dict[str, dict] = {}
        with httpx.Client(timeout=10) as client:
            for r in range(60):
                user = int(rng.integers(len(sim.world.user_tenant)))
                tenant = int(sim.world.user_tenant[user])
                pool = np.flatnonzero(sim.world.item_tenant == tenant)
                items = rng.choice(pool, 30, replace=False)
                ts = datetime(serve_day.year, serve_day.month, serve_day.day, tzinfo=timezone.utc) + timedelta(
                    seconds=float(rng.uniform(0, 86_000)))
                body = {"tenant_id": sim.world.tenants[tenant], "user_id": sim.ids.user(user),
                        "surface": ("feed", "search", "related")[r % 3], "device": "android",
                        "request_id": f"parity-{r:03d}", "ts": format_ts(ts), "limit": 12,
                        "candidates": [{"item_id": sim.ids.item(int(i))} for i in items]}
                bodies[body["request_id"]] = body
                resp = client.post(f"{pods.urls[0]}/rank", json=body)
                assert resp.status_code == 200, resp.text
                for it in resp.json()["items"]:
                    served[(body["request_id"], it["item_id"])] = it["score"]
        deadline = time.monotonic() + 30
        landed = 0
        while landed < len(bodies) and time.monotonic() < deadline:  # one impression-list record per request
            landed += sink.run(settings).records
        assert landed == len(bodies)
    finally:
        pods.stop()
    dataset.build(settings, end=serve_day + timedelta(days=1))  # the dataset of logical date serve_day
    store = ObjectStore.from_settings(settings)
    bucket = settings.s3.lake_bucket
    rows = [pq.read_table(io.BytesIO(store.get(bucket, k).body))
            for k in store.list_keys(bucket, f"datasets/ranker/{serve_day}/split=holdout/")]
    table = pa.concat_tables(rows)
    mine = np.isin(table["request_id"].to_numpy(zero_copy_only=False), sorted({k[0] for k in served}))
    table = table.filter(mine)
    assert table.num_rows == len(served)
    assert set(table["model_version"].to_pylist()) == {live.version}
    matrix = np.column_stack([table[features.column(n)].to_numpy(zero_copy_only=False)
                              for n in features.FEATURE_NAMES]).astype(np.float32)
    # Feature by feature first: the serving path (the published snapshot the pod used) vs the training rows.
    folder = published["uri"][len(f"s3://{models}/"):]
    refreshed = Snapshot.from_parquet({k[len(folder):]: store.get(models, k).body
                                       for k in store.list_keys(models, folder) if k.endswith(".parquet")})
    own = Snapshot.from_parquet({n[len("features/"):]: registry.read(live.version, n)
                                 for n in manifest["artifacts"] if n.startswith("features/")})
    cats = {f["name"]: f["categories"] for f in manifest["feature_manifest"]["features"] if "categories" in f}

    def serving_matrix(snapshot: Snapshot) -> np.ndarray:
        rows = []
        for q, i in zip(table["request_id"].to_pylist(), table["item_id"].to_pylist()):
            b = bodies[q]
            inputs = snapshot.inputs(tenant_id=b["tenant_id"], user_id=b["user_id"], surface=b["surface"],
                                     device=b["device"], request_ts=events.parse_ts(b["ts"]).timestamp(),
                                     item_ids=[i], author_ids=snapshot.authors([i], [None]))
            rows.append(features.derive(inputs, cats)[0])
        return np.vstack(rows)

    def differ(served_rows: np.ndarray) -> dict[str, float]:
        return {n: float(np.nanmax(np.abs(served_rows[:, j] - matrix[:, j])))
                for j, n in enumerate(features.FEATURE_NAMES)
                if not np.allclose(served_rows[:, j], matrix[:, j], rtol=0, atol=1e-4, equal_nan=True)}

    mismatch = differ(serving_matrix(refreshed))
    assert not mismatch, f"serving features differ from the training rows: {mismatch}"
    assert differ(serving_matrix(own)), "the model's own (a day older) snapshot should not match the training rows"
    expected = lgb.Booster(model_str=registry.read(live.version, "model.txt").decode()).predict(matrix)
    got = np.array([served[(q, i)] for q, i in zip(table["request_id"].to_pylist(), table["item_id"].to_pylist())])
    assert float(np.max(np.abs(got - expected))) <= 1e-5
