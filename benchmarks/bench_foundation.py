"""Ingest throughput against the raw sentence-transformers encode throughput of the same chunks, and the time
of an answer split into retrieval, time to first token and generation.

    python benchmarks/bench_foundation.py [FOLDER ...] [--model NAME] [--question Q ...]

Prints figures and same-run ratios; never asserts on time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rag import RAG
from rag.ingest import discover
from rag.loaders import LoadError, load_file

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Who originally wrote R?",
    "What is CRAN?",
    "How can R be installed on Windows?",
    "How do I decrypt a PDF with pypdf?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", default=[str(REPO / "data")])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--question", action="append", dest="questions")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}")

    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(store=Path(tmp) / "store", model=args.model)
        t = time.perf_counter()
        emb = rag.embeddings
        print(f"embedding model load: {time.perf_counter() - t:.1f} s")
        emb.embed_documents(["warm-up"] * 8)

        # Raw encode of exactly the chunks ingest will make (parsing and splitting not timed here).
        files, _ = discover(args.folders)
        texts: list[str] = []
        for path in files:
            try:
                texts += [c.page_content for c in rag.splitter.split(load_file(path).documents)]
            except LoadError:
                pass
        t = time.perf_counter()
        emb.model.encode(texts, batch_size=rag.settings.embedding_batch_size, normalize_embeddings=True)
        raw = len(texts) / (time.perf_counter() - t)

        report = rag.ingest(*args.folders)
        ingest_rate = report.chunks / report.seconds
        print(f"files {report.files}, pages {report.pages}, chunks {report.chunks} (raw set {len(texts)})")
        print(f"raw sentence-transformers encode: {raw:.1f} chunks/s")
        print(f"rag ingest (load+split+embed+store): {ingest_rate:.1f} chunks/s in {report.seconds:.1f} s")
        print(f"ratio ingest/raw: {ingest_rate / raw:.2f}")
        t = time.perf_counter()
        again = rag.ingest(*args.folders)
        print(f"re-ingest unchanged: {time.perf_counter() - t:.2f} s ({len(again.unchanged)} unchanged), "
              f"{(time.perf_counter() - t) / report.seconds:.1%} of the first ingest")

        t = time.perf_counter()
        rag.llm
        print(f"chat model {args.model} load: {time.perf_counter() - t:.1f} s")
        rows = []
        for q in args.questions or QUESTIONS:
            t0 = time.perf_counter()
            rag.retriever.invoke(q)
            retrieval = time.perf_counter() - t0
            t0 = time.perf_counter()
            first = None
            tokens = 0
            for chunk in rag.chain.stream(q):
                if "answer" in chunk:
                    tokens += 1
                    first = first or time.perf_counter() - t0
            total = time.perf_counter() - t0
            rows.append((retrieval, first or total, total, tokens))
            print(f"  {q!r}: retrieval {retrieval * 1000:.0f} ms, first token {first or 0:.2f} s, total {total:.2f} s, "
                  f"{tokens} chunks streamed, generation {tokens / max(total - (first or 0), 1e-9):.1f} tok/s")
        med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
        print(f"median: retrieval {med(0) * 1000:.0f} ms, time to first token {med(1):.2f} s, total {med(2):.2f} s, "
              f"generation {med(2) - med(1):.2f} s")


if __name__ == "__main__":
    main()
