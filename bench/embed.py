"""Item-embedding benchmark on ONE core: (a) the embedder alone on N generated item texts (items/s, wall and
CPU), (b) feedloop.content.item_embeddings.embed_catalog against a real S3 — the first run over a catalog of N
items, the incremental re-run with nothing new, and a run after 1 % new items.

    .venv/bin/python bench/embed.py [--items 100000] [--new-share 0.01]

Prints a table and writes bench/results/embed.json. One core: the process is pinned to one CPU and numpy /
OpenMP / tokenizers are held to one thread before they load. Starts its own embedded S3 on free ports (a
temporary state folder; no Kafka, no Airflow), so it never touches a running demo stack. The load average
before and after is recorded: on a shared machine the wall times move with it, the CPU times much less.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402 - the thread limits above must precede numpy and tokenizers
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

TOPICS = 12
TENANTS = ("acme", "globex", "initech")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(fn):
    """(result, wall s, CPU s of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def catalog(n: int, *, first: int = 0) -> tuple[bytes, list[str]]:
    """A catalog object of n items numbered from `first` (simulator text), and the texts as embedded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedloop.content.item_embeddings import item_text as embedded_text
    from feedloop.ops.simulate.text import item_text

    ids = [f"{TENANTS[i % 3]}-i{i:07d}" for i in range(first, first + n)]
    texts = [item_text(item_id, (i * 7919) % TOPICS, TOPICS) for i, item_id in enumerate(ids, start=first)]
    table = pa.table({"item_id": ids, "tenant_id": [i.split("-")[0] for i in ids],
                      "topic": [f"topic-{(i * 7919) % TOPICS}" for i in range(first, first + n)],
                      "title": [t for t, _ in texts], "description": [d for _, d in texts]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue(), [embedded_text(t, d) for t, d in texts]


def concat(*bodies: bytes) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.concat_tables([pq.read_table(io.BytesIO(b)) for b in bodies]), buf, compression="zstd")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--new-share", type=float, default=0.01)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} on {os.cpu_count()} cores; "
          f"pinned to CPU {min(os.sched_getaffinity(0))}", file=sys.stderr, flush=True)

    from feedloop.content.embedder import load_embedder
    from feedloop.content.item_embeddings import embed_catalog
    from feedloop.core import layout as lake
    from feedloop.core.config import load_settings
    from feedloop.core.storage import ObjectStore
    from feedloop.ops import stack
    from tests.conftest import stack_environ

    (body, texts), gen_s, _ = timed(lambda: catalog(args.items))
    settings = load_settings()
    embedder, load_s, _ = timed(lambda: load_embedder(settings.content))
    rss_loaded = peak_rss_mb()
    vectors, embed_s, embed_cpu = timed(lambda: embedder.embed(texts))
    alone = {"items": len(texts), "dim": int(vectors.shape[1]), "batch_size": embedder.batch_size,
             "generate_s": gen_s, "model_load_s": load_s, "peak_rss_mb_after_load": rss_loaded,
             "embed_wall_s": embed_s, "embed_cpu_s": embed_cpu, "items_per_s": round(len(texts) / embed_s),
             "items_per_cpu_s": round(len(texts) / embed_cpu), "peak_rss_mb": peak_rss_mb()}
    del vectors
    print(f"embedder alone: {alone['items_per_s']:,} items/s ({alone['items_per_cpu_s']:,} per CPU s), "
          f"peak RSS {alone['peak_rss_mb']} MB", file=sys.stderr, flush=True)

    env = stack_environ(Path(tempfile.mkdtemp(prefix="feedloop-bench-embed-")))
    env |= {"FEEDLOOP_STACK__EMBEDDED_KAFKA": "false", "FEEDLOOP_STACK__EMBEDDED_AIRFLOW": "false"}
    os.environ.update(env)
    settings = load_settings()
    stack.up(settings, echo=lambda m: print(m, file=sys.stderr))
    try:
        store, bucket = ObjectStore.from_settings(settings), settings.s3.lake_bucket
        store.put(bucket, lake.CATALOG_ITEMS_KEY, body)
        runs = {}
        for name in ("first", "nothing_new", "new_items"):
            if name == "new_items":
                extra, _ = catalog(round(args.items * args.new_share), first=args.items)
                store.put(bucket, lake.CATALOG_ITEMS_KEY, concat(body, extra))
            result, wall, cpu = timed(lambda: embed_catalog(store, bucket, embedder))
            runs[name] = {"status": result.status, "embedded": result.embedded, "kept": result.kept,
                          "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb()}
            print(f"embed_catalog {name}: {runs[name]}", file=sys.stderr, flush=True)
        size = len(store.get(bucket, lake.CATALOG_EMBEDDINGS_KEY).body)
    finally:
        stack.down(settings, echo=lambda m: None)

    load_after = os.getloadavg()
    result = {"embedder_alone": alone, "embed_catalog": runs, "embeddings_object_mb": round(size / 1e6, 1),
              "model": embedder.model_id, "cores_used": 1, "cpus": os.cpu_count(),
              "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}
    out = ROOT / "bench" / "results" / "embed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"item embeddings, {embedder.model_id}, one core (load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)})")
    print(f"  embedder alone: {alone['items']:,} texts in {alone['embed_wall_s']} s wall / {alone['embed_cpu_s']} s "
          f"CPU = {alone['items_per_s']:,} items/s ({alone['items_per_cpu_s']:,} per CPU s); model load "
          f"{alone['model_load_s']} s; peak RSS {alone['peak_rss_mb']} MB")
    print(f"  {'embed_catalog run':<18} {'status':<10} {'embedded':>9} {'kept':>8} {'wall s':>7} {'CPU s':>7} "
          f"{'peak RSS MB':>11}")
    for name, r in runs.items():
        print(f"  {name:<18} {r['status']:<10} {r['embedded']:>9,} {r['kept']:>8,} {r['wall_s']:>7} {r['cpu_s']:>7} "
              f"{r['peak_rss_mb']:>11}")
    print(f"  embeddings object: {result['embeddings_object_mb']} MB; written to {out}")


if __name__ == "__main__":
    main()
