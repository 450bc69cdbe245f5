"""Retrieval quality of the three modes (bm25, dense, hybrid) on the development sets, as `rag eval retrieval`
measures it: SciFact (BEIR folder) and CMRC2018 (a QA file turned into a retrieval set).

    python benchmarks/bench_retrieval.py [--scifact DIR] [--cmrc FILE] [--stores DIR] [--modes bm25,dense,hybrid]
                                         [--limit-queries N] [--k CHUNKS]

Each corpus is ingested once (through the normal ingest path) into a store under --stores (default: a
temporary folder; give a folder to keep the stores and make re-runs skip the ingest), then every mode queries
the same store. Prints a table of figures and timings; never asserts on anything.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from rag import RAG
from rag.config import Settings
from rag.eval import CHUNKS, load_retrieval_set, prepare_store, run_queries

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "corpus" / "dev"
COLUMNS = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scifact", default=str(DEV / "scifact"), help="BEIR folder (default ../shared/corpus/dev/scifact)")
    ap.add_argument("--split", default=None, help="qrels split of the BEIR folder (default: the only one, else test)")
    ap.add_argument("--cmrc", default=str(DEV / "cmrc2018" / "cmrc2018_dev_part1.json"), help="CMRC2018 JSON file")
    ap.add_argument("--stores", default=None, help="folder for the stores (kept; default: temporary)")
    ap.add_argument("--modes", default="bm25,dense,hybrid")
    ap.add_argument("--limit-queries", type=int, default=None)
    ap.add_argument("--k", type=int, default=CHUNKS, help=f"chunks asked of the retriever per query (default {CHUNKS})")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    from rag.retrieval import hybrid as retrieval
    from rag.storage import lexical

    print(f"retrieval: RRF k {retrieval.RRF_K}, dense weight {retrieval.DENSE_WEIGHT}, pools >= {retrieval.POOL_MIN}; "
          f"BM25 tokeniser {lexical.tokenizer_name()}")

    sets = [("scifact", args.scifact, args.split), ("cmrc2018", args.cmrc, None)]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows: list[tuple[str, str, dict[str, float], float, float, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        stores = Path(args.stores) if args.stores else Path(tmp)
        embeddings = None
        for name, path, split in sets:
            if not Path(path).exists():
                print(f"{name}: {path} not found, skipped")
                continue
            data = load_retrieval_set(path, split).limited(args.limit_queries)
            settings = Settings.load(config_file=None, env={}, overrides={"store": stores / name, "k": args.k})
            base = RAG(settings)
            if embeddings is not None:
                base.__dict__["embeddings"] = embeddings
            id_of, ingest_s = prepare_store(base, data)
            embeddings = base.embeddings
            print(f"{name}: {len(data.queries)} queries, {len(id_of)} documents, {base.store.count()} chunks; "
                  f"ingest {ingest_s:.1f} s (a store built before is only checked)", flush=True)
            for mode in modes:
                rag = RAG(settings.model_copy(update={"retrieval": mode}))
                rag.__dict__["embeddings"] = embeddings
                rag.__dict__["store"] = base.store
                report = run_queries(rag, data, id_of, ingest_s)
                rows.append((name, mode, report.metrics, ingest_s, report.query_seconds, report.queries, report.chunks))
                print(f"  {mode:<7} " + "  ".join(f"{c} {report.metrics[c]:.4f}" for c in COLUMNS)
                      + f"  ({1000 * report.query_seconds / max(report.queries, 1):.0f} ms/query)", flush=True)

    print()
    header = f"| set | mode | {' | '.join(COLUMNS)} | ms/query |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, mode, metrics, _ingest, query_s, n, _chunks in rows:
        print(f"| {name} | {mode} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS)
              + f" | {1000 * query_s / max(n, 1):.0f} |")


if __name__ == "__main__":
    main()
