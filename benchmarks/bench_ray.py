"""Ingest on Ray against a local ingest of the same folder, on this machine: local, a 1-node and a 2-node Ray
cluster (one CPU, hence one embedding actor, per node; ray.cluster_utils.Cluster: every node its own raylet and
worker processes). Prints chunks/s of each and the same-run ratios; never asserts on time.

    python benchmarks/bench_ray.py [PATH ...] [--batch-size N]

PATH defaults to ../shared/corpus/docs (tens of minutes per case on 2 cores). Each case ingests into a fresh
embedded store with OCR off; the Ray cases' time includes starting the actors (each loads the model) but not
the cluster. Where the time goes on the driver (the one writer): `writer s` is the time spent in
Store.replace_file (Chroma + BM25 + manifest), measured by wrapping that method.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT = REPO.parent / "shared" / "corpus" / "docs"


def ingest(paths: list[str], store: Path, ray_address: str | None, batch_size: int, model: str = "all-MiniLM-L6-v2") -> dict:
    from rag.api import RAG
    from rag.config import Settings

    settings = Settings.load(config_file=None, env={}, overrides={
        "store": store, "ocr": "never", "ray_address": ray_address, "embedding_batch_size": batch_size,
        "embedding_model": model})  # named: "auto" would pick e5 (5x slower) for a corpus with Chinese files
    rag = RAG(settings)
    writer = [0.0]
    replace = rag.store.replace_file

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return replace(*args, **kwargs)
        finally:
            writer[0] += time.perf_counter() - started

    rag.store.replace_file = timed  # the driver's share: the one writer
    started = time.perf_counter()
    report = rag.ingest(*paths)
    seconds = time.perf_counter() - started
    rag.store.close()
    return {"chunks": report.chunks, "files": len(report.ingested), "failed": len(report.failed), "seconds": seconds,
            "writer": writer[0]}


def cluster_case(paths: list[str], nodes: int, root: Path, batch_size: int) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        return ingest(paths, root / f"ray{nodes}", cluster.address, batch_size)
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(DEFAULT)])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not all(Path(p).exists() for p in args.paths):
        sys.exit(f"not found: {args.paths} (the team's corpus is at ../shared)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the cluster this script starts (see the README)
    from bench_ingest import machine
    from rag import privacy

    privacy.apply()
    print(f"machine: {machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["local"] = ingest(args.paths, Path(tmp) / "local", None, args.batch_size)
        _show("local", results["local"])
        for nodes in (1, 2):
            results[f"ray {nodes}"] = cluster_case(args.paths, nodes, Path(tmp), args.batch_size)
            _show(f"ray {nodes} node{'s' * (nodes > 1)}", results[f"ray {nodes}"])
    rate = {name: r["chunks"] / r["seconds"] for name, r in results.items()}
    print(f"ratio ray 1 node / local: {rate['ray 1'] / rate['local']:.2f}  (Ray's own overhead; target >= 0.9)")
    print(f"ratio ray 2 nodes / 1 node: {rate['ray 2'] / rate['ray 1']:.2f}  (target >= 1.6 on 2 cores)")
    print(f"machine after: {machine()}")


def _show(name: str, r: dict) -> None:
    print(f"{name:12s} {r['files']} files, {r['chunks']} chunks ({r['failed']} failed) in {r['seconds']:.1f} s: "
          f"{r['chunks'] / r['seconds']:.1f} chunks/s; writer {r['writer']:.1f} s "
          f"({100 * r['writer'] / r['seconds']:.0f}% of the run)", flush=True)


if __name__ == "__main__":
    main()
