"""Content-similarity features, measured: (a) the ranker trained with and without them on the same rows, holdout
NDCG@10 from the logged labels and ground-truth NDCG@10 from the world's hidden utility; (b) what they add to the
training-set build per 1M impressions.

    .venv/bin/python bench/content_features.py [--impressions 1000000] [--users 20000] [--items 20000] [--dim 64]
                                               [--cost-impressions 1000000] [--cost-dims 64,384] [--seeds 7,8]

Writes bench/results/content_features.json. Starts its own embedded S3 on free ports (no Kafka, no Airflow).

The lake is bench/train.py's synthetic world (clicks follow position bias, a hidden item quality and whether the
item is on the user's favourite topic), generated in this process. (a) uses a smaller population than bench/train.py
(--users, --items: users come back often enough to have a history within 14 days), (b) the default one (500k users,
200k items), the build's measured hot path. Item embeddings are NOT the content package's (item text is not in
this world): each item's vector is a one-hot of its topic over the first dimensions plus N(0, --noise) on every
dimension, L2-normalised, written to catalog/items/embeddings.parquet as that package writes it. So the embeddings
know the topic and nothing else, which the user x topic count features also see: a modest gain is what to expect.
--catalog-topics N rewrites the catalog with a coarser taxonomy (world topic t -> "topic-<t * N // TOPICS>") while
the embeddings keep the world's fine topics: the case content embeddings are for (a taxonomy coarser than what
the text says); clicks still follow the fine topic.

--world simulator measures (a) on the closed-loop simulator's own traffic (feedloop.ops.simulate, legacy policy,
in process; bench/simlake.py writes its events straight into the lake) with the REAL content pipeline: the
catalog's titles and descriptions embedded by feedloop.content (the configured wordllama model and dim), the
training set by features.dataset.build over the configured window (the last of --sim-days is held out). Ground
truth is the simulator's hidden utility (simulate.true_gain). The events are simulated once per --world-seeds
seed; each --categories value is published as the catalog (simulate.catalog_categories) over the same events.

    .venv/bin/python bench/content_features.py --world simulator [--sim-days 21] [--events-per-day 40000]
                                               [--world-seeds 7,8] [--categories 0,4,2] [--seeds 7,8,9]

Writes bench/results/content_features_simulator.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import simlake  # noqa: E402  bench/simlake.py: the simulator's traffic as a lake
import train as lakegen  # noqa: E402  bench/train.py: the synthetic lake

RESULTS = ROOT / "bench" / "results"
SIM_START = date(2026, 11, 1)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_embeddings(store, bucket: str, world, dim: int, noise: float, seed: int = 5) -> None:
    """Topic one-hot + noise, L2-normalised, in the content package's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedloop.core import layout

    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, noise, (len(world.item_ids), dim)).astype(np.float32)
    vectors[np.arange(len(world.item_ids)), world.item_topic % dim] += 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n = len(world.item_ids)
    table = pa.table({
        "item_id": pa.array(world.item_ids), "tenant_id": pa.array(world.tenants).take(pa.array(world.item_tenant)),
        "model": pa.array(["bench-topic-onehot"] * n), "text_sha256": pa.array(["0" * 64] * n),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "embedded_at": pa.array(np.full(n, 1_790_000_000_000), pa.timestamp("ms", tz="UTC")),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.put(bucket, layout.CATALOG_EMBEDDINGS_KEY, buf.getvalue())


def timed_build(settings, end) -> dict:
    from feedloop.features import dataset

    load, c0, t0 = os.getloadavg()[0], cpu_s(), time.perf_counter()
    res = dataset.build(settings, end=end)
    return {"s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu_s() - c0, 1), "load1": round(load, 2),
            "rows": sum(res.rows.values())}


def build_cost(n: int, days: int, dims: list[int], noise: float) -> dict:
    """The build on the same lake without an embeddings object, then with embeddings of each dimension, twice."""
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore
    from feedloop.core import layout

    lakegen.topic_name = lambda size: f"bench-content-cost-{size}"
    gen = lakegen.generate(n, days)
    settings = lakegen.bench_settings(n, days, 100)
    store, bucket = ObjectStore.from_settings(load_settings()), settings.s3.lake_bucket
    world = lakegen.World(list(settings.events.tenants))
    end = lakegen.START + timedelta(days=days)
    runs: dict[str, list[dict]] = {"without": [], **{f"dim{d}": [] for d in dims}}
    for _ in range(2):
        store.delete(bucket, layout.CATALOG_EMBEDDINGS_KEY)
        runs["without"].append(timed_build(settings, end))
        for d in dims:
            write_embeddings(store, bucket, world, d, noise)
            runs[f"dim{d}"].append(timed_build(settings, end))
        print(f"[cost] {json.dumps({k: v[-1] for k, v in runs.items()})}", file=sys.stderr, flush=True)
    store.delete(bucket, layout.CATALOG_EMBEDDINGS_KEY)
    base = min(r["cpu_s"] for r in runs["without"])
    return {"impressions": gen["impressions"], "runs": runs,
            "added_cpu_s_per_1M": {k: round((min(r["cpu_s"] for r in v) - base) / (n / 1e6), 2)
                                   for k, v in runs.items() if k != "without"},
            "added_wall_s_per_1M": {k: round((min(r["s"] for r in v) - min(r["s"] for r in runs["without"]))
                                             / (n / 1e6), 2) for k, v in runs.items() if k != "without"}}


def _holdout(settings, day):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedloop.core import layout as lake
    from feedloop.core.storage import ObjectStore

    store = ObjectStore.from_settings(settings)
    keys = sorted(store.list_keys(settings.s3.lake_bucket, f"{lake.dataset_prefix(day)}split=holdout/"))
    return pa.concat_tables([pq.read_table(io.BytesIO(store.get(settings.s3.lake_bucket, k).body)) for k in keys])


def _truth(world, holdout) -> np.ndarray:
    """The world's click probability without position bias: the ground-truth gain of a shown item."""
    user = np.array([int(u.rsplit("-u", 1)[1]) for u in holdout["user_id"].to_pylist()])
    item = np.array([int(i.rsplit("-i", 1)[1]) for i in holdout["item_id"].to_pylist()])
    util = world.item_quality[item] + lakegen.TASTE * (world.item_topic[item] == world.user_fav_topic[user])
    return 1.0 / (1.0 + np.exp(-(util - 1.0)))


def coarse_catalog(store, bucket: str, world, topics: int) -> None:
    """The world's catalog with topic t shown as "topic-<t * topics // TOPICS>"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedloop.core import layout as lake

    catalog = world.catalog()
    coarse = pa.array([f"topic-{t * topics // lakegen.TOPICS}" for t in world.item_topic])
    catalog = catalog.set_column(catalog.schema.get_field_index("topic"), "topic", coarse)
    buf = io.BytesIO()
    pq.write_table(catalog, buf, compression="zstd")
    store.put(bucket, lake.CATALOG_ITEMS_KEY, buf.getvalue())


def quality(n: int, days: int, users: int, items: int, dim: int, noise: float, seeds: list[int],
            catalog_topics: int, topics: int, taste: float) -> dict:
    """bench/train.py's world with synthetic embeddings: build once, then compare() the two variants."""
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore

    lakegen.USERS, lakegen.ITEMS, lakegen.AUTHORS = users, items, max(30, items // 10)
    lakegen.TOPICS, lakegen.TASTE = topics, taste
    lakegen.topic_name = lambda size: f"bench-content-quality-{size}-{catalog_topics}"
    gen = lakegen.generate(n, days)
    settings = lakegen.bench_settings(n, days, 300)
    settings = settings.model_copy(update={"train": load_settings().train})      # the configured early stopping
    world = lakegen.World(list(settings.events.tenants))
    write_embeddings(ObjectStore.from_settings(settings), settings.s3.lake_bucket, world, dim, noise)
    if catalog_topics:
        coarse_catalog(ObjectStore.from_settings(settings), settings.s3.lake_bucket, world, catalog_topics)
    end = lakegen.START + timedelta(days=days)
    build = timed_build(settings, end)
    return {"impressions": gen["impressions"], "build": build,
            **compare(settings, end - timedelta(days=1), lambda holdout: _truth(world, holdout), seeds)}


def compare(settings, day, truth_of, seeds: list[int]) -> dict:
    """Train with and without the two content features on the same rows of day's training set, once per seed;
    score the holdout: NDCG@10 from the logged labels and from `truth_of(holdout)`, all lists and exploration ones."""
    from feedloop.features import definitions as features
    from feedloop.training import evaluate, export, selection, train

    holdout = _holdout(settings, day)
    truth = truth_of(holdout)
    explore = np.asarray(holdout["explore"].to_numpy(zero_copy_only=False), bool)
    request = np.asarray(holdout["request_id"].to_numpy(zero_copy_only=False))
    _, gid = np.unique(request, return_inverse=True)
    content = holdout[features.column("user_item_content_cos")].to_numpy(zero_copy_only=False)
    variants = {"without": [f for f in features.FEATURE_NAMES if f not in features.CONTENT_COLUMNS],
                "with": list(features.FEATURE_NAMES)}
    out: dict = {"holdout_rows": holdout.num_rows, "holdout_rows_with_content_cos": int(np.isfinite(content).sum()),
                 "variants": {}}
    for seed in seeds:
        cfg = settings.train.model_copy(update={"seed": seed})
        for name, names in variants.items():
            t0 = time.perf_counter()
            tr, va = (train.load_split(settings, day, s, names=names) for s in ("train", "valid"))
            tg, vg = train.group_sizes(tr["request_id"]), train.group_sizes(va["request_id"])
            metric = selection.ipw_ndcg(vg, va["label"].to_numpy().astype(np.float64),
                                        va["weight"].to_numpy().astype(np.float64))
            dtrain = train.to_lgb_dataset(tr, cfg.objective, max_bin=cfg.max_bin, groups=tg, names=names)
            dvalid = train.to_lgb_dataset(va, cfg.objective, reference=dtrain, max_bin=cfg.max_bin, groups=vg,
                                          names=names)
            booster, _ = train.fit(cfg, cfg.objective, dtrain, dvalid, metric)
            matrix = np.column_stack([holdout[features.column(f)].to_numpy(zero_copy_only=False)
                                      for f in names]).astype(np.float32)
            score = booster.predict(matrix, num_iteration=booster.best_iteration)
            row = {"seed": seed, "best_iteration": booster.best_iteration, "train_rows": tr.num_rows,
                   "train_s": round(time.perf_counter() - t0, 1)}
            for part, mask in (("all", np.ones(len(score), bool)), ("explore", explore)):
                m = evaluate.ranking_metrics(label=holdout["label"].to_numpy()[mask],
                                             binary=holdout["label_binary"].to_numpy()[mask], score=score[mask],
                                             group=request[mask])
                g = np.unique(gid[mask], return_inverse=True)[1]
                gt = evaluate.per_list(gain=truth[mask], binary=None, score=score[mask], gid=g,
                                       n_lists=int(g.max()) + 1)
                row[part] = {"ndcg@10": round(m["ndcg@10"], 4), "lists": m["groups"],
                             "truth_ndcg@10": round(float(np.nanmean(gt["ndcg@10"])), 4)}
            if name == "with":
                text = booster.model_to_string(num_iteration=booster.best_iteration)
                parity = export.check_parity(model_text=text, onnx_bytes=export.to_onnx(model_text=text,
                                                                                          n_features=len(names)),
                                             matrix=matrix, threshold=1e-4)
                row["onnx_parity_max_abs_diff"] = parity.max_abs_diff
                row["onnx_parity_rows_with_nan_content"] = int(np.isnan(matrix[:, -2:]).any(axis=1).sum())
            out["variants"].setdefault(name, []).append(row)
            print(f"[quality] {name} {json.dumps(row)}", file=sys.stderr, flush=True)
    return out


def simulator_quality(*, world_seed: int, days: int, events_per_day: int, categories: list[int],
                      seeds: list[int]) -> dict:
    """The closed-loop simulator's own traffic (legacy policy, in process) with the real content pipeline: the
    catalog's titles and descriptions embedded by feedloop.content, the training set by features.dataset.build.
    The events are simulated once; each catalog taxonomy (simulate.catalog_categories) is published over them in
    turn, embedded (an unchanged text is not embedded again), built and compared."""
    from feedloop.content import item_embeddings
    from feedloop.content.embedder import load_embedder
    from feedloop.core import layout
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore
    from feedloop.ops.simulate import Simulator, write_catalog

    base, lake = load_settings(), f"bench-content-sim-{world_seed}"

    def configured(c: int):
        return base.model_copy(update={
            "s3": base.s3.model_copy(update={"lake_bucket": lake}),
            "retrain": base.retrain.model_copy(update={"start_date": SIM_START}),
            "simulate": base.simulate.model_copy(update={"seed": world_seed, "catalog_categories": c})})

    store = ObjectStore.from_settings(base)
    store.ensure_bucket(lake)
    t0 = time.perf_counter()
    report = simlake.write_events(configured(0), store, Simulator(configured(0), start=SIM_START, days=days,
                                                                   events_per_day=events_per_day))
    out: dict = {"world_seed": world_seed, "events": report.events, "requests": report.requests,
                 "by_type": report.by_type, "simulate_and_write_s": round(time.perf_counter() - t0, 1),
                 "catalogs": {}}
    end = SIM_START + timedelta(days=days)
    day, embedder = end - timedelta(days=1), load_embedder(base.content)
    for c in categories:
        settings = configured(c)
        sim = Simulator(settings, start=SIM_START, days=days, events_per_day=events_per_day)  # the same world
        write_catalog(settings, sim)
        embedded = item_embeddings.embed_catalog(store, lake, embedder)
        for key in list(store.list_keys(lake, layout.dataset_prefix(day))):  # the previous catalog's build
            store.delete(lake, key)
        build = timed_build(settings, end)

        def truth(holdout, sim=sim):
            return simlake.gains(sim.world, sim.ids, holdout["user_id"].to_pylist(), holdout["item_id"].to_pylist())

        out["catalogs"][str(c)] = {
            "catalog_topics": len({sim.world.catalog_topic(int(t)) for t in sim.world.item_topic}),
            "embed": {"status": embedded.status, "embedded": embedded.embedded, "model": embedded.model,
                      "seconds": round(embedded.seconds, 1)},
            "build": build, **compare(settings, day, truth, seeds)}
    return out


METRICS = (("holdout", "all", "ndcg@10"), ("explore", "explore", "ndcg@10"),
           ("truth", "all", "truth_ndcg@10"), ("truth explore", "explore", "truth_ndcg@10"))


def table(worlds: list[dict]) -> str:
    """Mean NDCG@10 over the LightGBM seeds without / with the content features, the mean paired difference
    (same seed, same rows) and its range over the seeds; one line per catalog taxonomy, world seed and metric."""
    lines = ["| catalog | world seed | metric | without | with | with - without | per LightGBM seed |",
             "|---|---|---|---|---|---|---|"]
    for c in worlds[0]["catalogs"]:
        for metric, part, key in METRICS:
            for w in worlds:
                v = w["catalogs"][c]["variants"]
                wo, wi = ([r[part][key] for r in v[name]] for name in ("without", "with"))
                diff = [b - a for a, b in zip(wo, wi)]
                label = "exact topics" if c == "0" else f"{w['catalogs'][c]['catalog_topics']} categories"
                lines.append(f"| {label} | {w['world_seed']} | {metric} | {np.mean(wo):.4f} | {np.mean(wi):.4f} | "
                             f"{np.mean(diff):+.4f} | {', '.join(f'{d:+.4f}' for d in diff)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impressions", type=int, default=1_000_000, help="0: skip the with / without training")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.1, help="per-dimension N(0, noise) added to the one-hot")
    parser.add_argument("--seeds", default="7,8", help="LightGBM seeds, each variant trained once per seed")
    parser.add_argument("--catalog-topics", type=int, default=0, help="a coarser catalog taxonomy (0: the world's)")
    parser.add_argument("--topics", type=int, default=50, help="the world's topics (bench/train.py: 50)")
    parser.add_argument("--taste", type=float, default=1.0,
                        help="utility of a favourite-topic item (bench/train.py: 1.0)")
    parser.add_argument("--cost-impressions", type=int, default=1_000_000, help="0: skip the build-cost runs")
    parser.add_argument("--cost-dims", default="64,384")
    parser.add_argument("--world", choices=("synthetic", "simulator"), default="synthetic",
                        help="simulator: the closed-loop simulator's traffic and the real content pipeline")
    parser.add_argument("--sim-days", type=int, default=21, help="simulator: days simulated (the last is held out)")
    parser.add_argument("--events-per-day", type=int, default=40_000, help="simulator: events a day")
    parser.add_argument("--world-seeds", default="7,8", help="simulator: simulate.seed of each world")
    parser.add_argument("--categories", default="0,4,2",
                        help="simulator: simulate.catalog_categories of each catalog published (0: exact topics)")
    args = parser.parse_args()
    out = RESULTS / os.environ.get("BENCH_RESULT_NAME", f"content_features{'_simulator' * (args.world != 'synthetic')}"
                                                         ".json")

    from feedloop.core.config import load_settings
    from feedloop.ops import stack
    from tests.conftest import stack_environ

    env = stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-bench-content-")))
    env["FEEDLOOP_STACK__EMBEDDED_KAFKA"] = "false"
    os.environ.update(env)
    settings = load_settings()
    stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
    result: dict = {"args": vars(args), "load_before": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        if args.world == "simulator":
            result["simulator"] = [simulator_quality(world_seed=int(w), days=args.sim_days,
                                                     events_per_day=args.events_per_day,
                                                     categories=[int(c) for c in args.categories.split(",")],
                                                     seeds=[int(s) for s in args.seeds.split(",")])
                                   for w in args.world_seeds.split(",")]
        elif args.cost_impressions:
            result["cost"] = build_cost(args.cost_impressions, args.days, [int(d) for d in args.cost_dims.split(",")],
                                        args.noise)
            RESULTS.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({**result, "partial": True}, indent=2))
        if args.impressions and args.world == "synthetic":
            result["quality"] = quality(args.impressions, args.days, args.users, args.items, args.dim, args.noise,
                                        [int(s) for s in args.seeds.split(",")], args.catalog_topics, args.topics,
                                        args.taste)
    finally:
        stack.down(settings, echo=lambda m: None)
    result["load_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if "simulator" in result:
        print(table(result["simulator"]))


if __name__ == "__main__":
    main()
