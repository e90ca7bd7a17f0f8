"""Two-tower retrieval on simulated traffic: recall of the truly relevant items against popularity.

    .venv/bin/python bench/retrieval.py [--days 14] [--users 6000] [--items 15000] [--events-per-day 100000]

The simulator (feedloop.ops.simulate, steady traffic, the legacy policy serving) makes N + 1 days of events in
memory, no services; the towers train on the positives (click, like, share) of the first N days and the
index holds every catalog item that exists by the end of the held-out day. On that day, for the users who
engaged on it, recall@100 / @500 of two relevant sets:
- truth: the user's top --truth-k items of their tenant's catalog by the simulator's hidden utility;
- engaged: the items the user clicked, liked or shared that day (what the pipeline itself can measure),
- explore: the same, on the exploration lists only (random candidates in random order, 5 % of requests): what
  users take when the logged policy did not choose what they saw,
and the cold recall: the engaged items with no positive in the training window; then the retriever gate's
exposure-weighted recall (feedloop.retrieval.counterfactual) with paired intervals, by weighting (impressions or
examination mass), lists (whole catalog or the items shown that day) and clip, to check it against the truth.
Two models are trained: the configured one (retrieval.log_q) and the same with the other log-Q correction, to
show what the choice costs.
Prints a table and writes bench/results/retrieval.json (training time, peak RSS, load average included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from feedloop.core.config import Settings, load_settings  # noqa: E402
from feedloop.ops.simulate import SimulationReport, Simulator  # noqa: E402
from feedloop.retrieval import counterfactual, evaluate, examples, export, items  # noqa: E402
from feedloop.training.counterfactual import Bootstrap  # noqa: E402
from feedloop.retrieval.index import TenantIndex  # noqa: E402
from feedloop.retrieval.train import train  # noqa: E402

START = date(2026, 11, 1)
EVENTS = pa.schema([("event_type", pa.string()), ("event_ts", pa.timestamp("ms", tz="UTC")),
                    ("ingest_ts", pa.timestamp("ms", tz="UTC")), ("tenant_id", pa.string()),
                    ("user_id", pa.string()), ("item_id", pa.string()), ("request_id", pa.string()),
                    ("explore", pa.bool_()), ("surface", pa.string()), ("position", pa.int64())])


def simulate(settings: Settings, days: int) -> tuple[Simulator, pa.Table]:
    """Every event of `days` days as the lake would hold it (arrival time = ingest_ts)."""
    sim = Simulator(settings, start=START, days=days, events_per_day=settings.simulate.events_per_day)
    rows = {name: [] for name in EVENTS.names}
    for record in sim.records(SimulationReport(start=START, days=days)):
        event = orjson.loads(record.value)
        for name in ("event_type", "tenant_id", "user_id", "item_id", "request_id"):
            rows[name].append(event[name])
        rows["explore"].append(event.get("explore"))  # impressions only
        rows["surface"].append(event.get("surface"))
        rows["position"].append(event.get("position"))
        rows["event_ts"].append(datetime.fromisoformat(event["event_ts"]))
        rows["ingest_ts"].append(datetime.fromtimestamp(record.arrival_ms / 1000, timezone.utc))
    return sim, pa.table(rows, schema=EVENTS)


def day_positives(settings: Settings, events: pa.Table, start: date, end: date, cutoff: datetime) -> pa.Table:
    return examples.positives(events, start=start, end=end, cutoff=cutoff,
                              event_types=settings.retrieval.positive_events)


def truth(sim: Simulator, user_tenant: dict[str, str], catalog: items.Catalog, k: int) -> dict[str, set[str]]:
    """Each user's top k catalog items of their tenant by the hidden utility."""
    world, ids = sim.world, sim.ids
    out = {}
    for user in user_tenant:
        u = ids.user_index[user]
        candidates = catalog.item_ids[catalog.tenant_ids == user_tenant[user]]
        rows = np.array([ids.item_index[i] for i in candidates])
        best = np.argsort(-world.utility(u, rows), kind="stable")[:k]
        out[user] = set(candidates[best].tolist())
    return out


def embedded(settings: Settings, catalog: pa.Table) -> pa.Table:
    """The catalog's titles and descriptions embedded by the content package's model (what the daily
    embed_catalog stores beside the catalog, here in memory): the item tower's content input."""
    from feedloop.content.embedder import load_embedder
    from feedloop.content.item_embeddings import item_text

    texts = [item_text(t, d) for t, d in zip(catalog["title"].to_pylist(), catalog["description"].to_pylist())]
    vectors = load_embedder(settings.content).embed(texts)
    return pa.table({"item_id": catalog["item_id"],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})


def run(settings: Settings, *, days: int, truth_k: int, content: bool = True) -> dict:
    cfg = settings.retrieval
    t0 = time.perf_counter()
    sim, events = simulate(settings, days + 1)
    sim_s = time.perf_counter() - t0
    holdout_day = START + timedelta(days=days)
    after = holdout_day + timedelta(days=1)
    # Training sees what had arrived when its day ended (as the daily run would); the holdout every event of its day.
    train_pos = day_positives(settings, events, START, holdout_day, _midnight(holdout_day))
    shown = examples.impressions(events, start=START, end=holdout_day, cutoff=_midnight(holdout_day))
    hold_pos = day_positives(settings, events, holdout_day, after, _midnight(after + timedelta(days=1)))
    explored = pc.is_in(events["request_id"], events.filter(pc.equal(events["explore"], True))["request_id"])
    hold_explore = day_positives(settings, events.filter(explored), holdout_day, after,
                                 _midnight(after + timedelta(days=1)))
    published = sim.world.catalog(start=START, ids=sim.ids)
    catalog = items.from_tables(published, embedded(settings, published) if content else None)
    catalog = catalog.existing(_midnight(after).timestamp())
    # The configured model, and the same with the other log-Q correction (what the choice costs on each set).
    other = "sampling" if cfg.log_q == "exposure" else "exposure"
    trained = {f"two-tower ({cfg.log_q})": train(train_pos, catalog, cfg, shown),
               f"two-tower ({other})": train(train_pos, catalog, cfg.model_copy(update={"log_q": other}), shown)}
    model = next(iter(trained.values()))
    t1 = time.perf_counter()
    indexes = {name: TenantIndex.build(m.item_vectors(catalog.item_ids), catalog.item_ids, catalog.tenant_ids,
                                       m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
               for name, m in trained.items()}
    index_s = (time.perf_counter() - t1) / len(indexes)
    models = {name: (m.query_vectors, indexes[name]) for name, m in trained.items()}
    engaged = evaluate.holdout(models=models, train_positives=train_pos, holdout_positives=hold_pos,
                               catalog=catalog, ks=cfg.recall_at)
    explore = evaluate.holdout(models=models, train_positives=train_pos, holdout_positives=hold_explore,
                               catalog=catalog, ks=cfg.recall_at)
    relevant, user_tenant = evaluate.engaged(hold_pos)
    sample_users, sample_items = sorted(user_tenant)[:1000], catalog.item_ids[:1000]
    parity = export.parity(model.params, model.shape, model.features.queries(sample_users),
                           model.features.items(sample_items), threshold=cfg.parity_max_abs_diff)
    best = truth(sim, user_tenant, catalog, truth_k)
    k = max(cfg.recall_at)
    truth_results = [evaluate.score(name, evaluate.retrieve(vectors, index, user_tenant, k), best, user_tenant,
                                    cfg.recall_at) for name, (vectors, index) in models.items()]
    truth_results.append(evaluate.score("popularity", evaluate.popularity(train_pos, catalog, user_tenant, k), best,
                                        user_tenant, cfg.recall_at))
    weighted = exposure_weighted(settings, events, models, train_pos, relevant, user_tenant, catalog, holdout_day)
    return {
        "days": days, "holdout_day": holdout_day.isoformat(), "truth_k": truth_k, "content_embeddings": content,
        "catalog_categories": settings.simulate.catalog_categories,
        "world": {"users": settings.simulate.users, "items": settings.simulate.items,
                  "events_per_day": settings.simulate.events_per_day, "seed": settings.simulate.seed,
                  "catalog_items_at_holdout": len(catalog.item_ids), "events": events.num_rows},
        "train": {"positives": train_pos.num_rows, "users": model.features.vocabs.users.size - 1,
                  "items": model.features.vocabs.items.size - 1, "seconds": model.seconds,
                  "epoch_losses": [round(x, 4) for x in model.epoch_losses]},
        "onnx_parity": parity.to_dict(), "holdout_positives": hold_pos.num_rows, "index_seconds": round(index_s, 2),
        "simulate_seconds": round(sim_s, 1),
        "retrieval": cfg.model_dump(mode="json"),
        "truth": [r.to_dict() for r in truth_results], "engaged": [r.to_dict() for r in engaged],
        "explore": [r.to_dict() for r in explore], "exposure_weighted": weighted,
        # The Must: recall@100 of the truly relevant items at least 2x popularity's (configured model).
        "truth_recall_at_100_vs_popularity": round(truth_results[0].at[100] / max(truth_results[-1].at[100], 1e-9), 2)
        if 100 in cfg.recall_at else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def exposure_weighted(settings: Settings, events: pa.Table, models: dict, train_pos: pa.Table, relevant: dict,
                      user_tenant: dict, catalog: items.Catalog, day: date) -> dict[str, dict]:
    """The gate's exposure-weighted recall of the engaged items (retrieval.counterfactual), at a few clips."""
    cfg, k = settings.retrieval, max(settings.retrieval.recall_at)
    after = day + timedelta(days=1)
    shown = examples.impressions(events, start=day, end=after, cutoff=_midnight(after + timedelta(days=1)))
    counts = dict(zip(shown["item_id"].to_pylist(), shown["impressions"].to_pylist()))
    mass = counterfactual.examined(_by_position(events, day, after), _curves(events, START, after))
    lists = {name: evaluate.retrieve(vectors, index, user_tenant, k) for name, (vectors, index) in models.items()}
    lists["popularity"] = evaluate.popularity(train_pos, catalog, user_tenant, k)
    first = next(iter(models))
    item_tenant = dict(zip(catalog.item_ids.tolist(), catalog.tenant_ids.tolist()))
    by_tenant: dict[str, list[str]] = {}
    for item in shown["item_id"].to_pylist():
        if item in item_tenant:
            by_tenant.setdefault(item_tenant[item], []).append(item)
    support = counterfactual.on_support(models=models, shown=by_tenant,
                                        popularity=Counter(train_pos["item_id"].to_pylist()),
                                        user_tenant=user_tenant, k=k)
    out = {"support items": {t: len(v) for t, v in sorted(by_tenant.items())}}
    for clip in sorted({cfg.max_ipw, 1e9}):
        for what, exposure in (("imp", counts), ("exam", mass)):
            weights = counterfactual.exposure_weights(exposure, item_tenant, max_weight=clip)
            for scope, scoped in (("catalog", lists), ("support", support)):
                out[f"{scope} {what} clip {clip:g}"] = counterfactual.weighted_recall(
                    lists=scoped, relevant=relevant, weights=weights, ks=cfg.recall_at,
                    paired=[(first, "popularity")], max_weight=clip,
                    bootstrap=Bootstrap(seed=settings.promotion.bootstrap_seed)).to_dict()
        out[f"support unweighted"] = counterfactual.weighted_recall(
            lists=support, relevant=relevant, weights={}, ks=cfg.recall_at, paired=[(first, "popularity")],
            max_weight=1.0, bootstrap=Bootstrap(seed=settings.promotion.bootstrap_seed)).to_dict()
    return out


def _by_position(events: pa.Table, start: date, end: date) -> pa.Table:
    """Impressions of event days [start, end) per (item, surface, position)."""
    ts = events["event_ts"]
    imp = events.filter(pc.and_(pc.equal(events["event_type"], "impression"),
                                pc.and_(pc.greater_equal(ts, pa.scalar(_midnight(start), ts.type)),
                                        pc.less(ts, pa.scalar(_midnight(end), ts.type)))))
    return imp.group_by(["item_id", "surface", "position"]).aggregate([("request_id", "count")]).rename_columns(
        ["item_id", "surface", "position", "impressions"])


def _curves(events: pa.Table, start: date, end: date) -> dict:
    """The examination curves from the exploration impressions of [start, end) (as the ranker's dataset does)."""
    from feedloop.features import propensity

    explore = _by_position(events.filter(pc.equal(events["explore"], True)), start, end)
    clicks = events.filter(pc.equal(events["event_type"], "click")).select(["request_id", "item_id"])
    shown = events.filter(pc.equal(events["explore"], True)).select(["request_id", "item_id", "surface", "position"])
    clicked = shown.join(clicks, ["request_id", "item_id"], join_type="inner")
    by = clicked.group_by(["surface", "position"]).aggregate([("item_id", "count")])
    n = explore.group_by(["surface", "position"]).aggregate([("impressions", "sum")])
    rows = n.join(by, ["surface", "position"], join_type="left outer").to_pydict()
    table = pa.table({"surface": rows["surface"], "position": rows["position"],
                      "impressions": rows["impressions_sum"], "clicks": [c or 0 for c in rows["item_id_count"]]})
    return propensity.from_exploration(table, min_impressions=1000)


def table(result: dict) -> str:
    ks = result["retrieval"]["recall_at"]
    lines = [f"{'relevant':<10}{'model':<25}{'users':>7}" + "".join(f"{f'@{k}':>9}" for k in ks)
             + "".join(f"{f'cold@{k}':>10}" for k in ks)]
    for kind in ("truth", "engaged", "explore"):
        for r in result[kind]:
            lines.append(f"{kind:<10}{r['name']:<25}{r['users']:>7}" + "".join(f"{r[f'recall@{k}']:>9.3f}" for k in ks)
                         + "".join(f"{r.get(f'cold_recall@{k}', float('nan')):>10.3f}" for k in ks))
    for clip, w in result["exposure_weighted"].items():
        if clip == "support items":
            lines.append(f"support (items each tenant showed that day): {w}")
            continue
        for name, by_k in (w["models"] | w["differences"]).items():
            lines.append(f"{clip:<20}{name[:24]:<25}{w['users']:>7}" + "".join(
                f"{by_k[f'recall@{k}']['value']:>9.3f} [{by_k[f'recall@{k}']['low']:.3f}, "
                f"{by_k[f'recall@{k}']['high']:.3f}]" for k in ks))
    return "\n".join(lines)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=15000)
    parser.add_argument("--authors", type=int, default=600)
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--truth-k", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    parser.add_argument("--no-content", dest="content", action="store_false",
                        help="train the item tower without the items' text embeddings")
    args = parser.parse_args()
    base = load_settings()
    settings = base.model_copy(update={"simulate": base.simulate.model_copy(update={
        "users": args.users, "items": args.items, "authors": args.authors, "events_per_day": args.events_per_day,
        "seed": args.seed})})
    result = run(settings, days=args.days, truth_k=args.truth_k, content=args.content)
    print(table(result))
    print(f"truth recall@100, configured two-tower / popularity: {result['truth_recall_at_100_vs_popularity']}x")
    print(f"ONNX parity (both towers, {result['onnx_parity']['rows']} rows): max |diff| "
          f"{result['onnx_parity']['max_abs_diff']:.2e}")
    print(f"train {result['train']['seconds']} s on {result['train']['positives']} positives, index "
          f"{result['index_seconds']} s, peak RSS {result['peak_rss_mb']} MB, load {result['load_average']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
