"""Embedding throughput of the bf16 backend against sentence-transformers' own float32 `encode` of the same
chunks, in the same process, in interleaved rounds; and how close the vectors are (cosine with float32).

    python benchmarks/bench_embeddings.py [PDF_OR_TEXT ...] [--chunks N] [--rounds R] [--threads T]

The chunks come from the given files (default ../shared/corpus/docs/en/debian-reference.en.pdf, else the
repo's data/), split as `rag ingest` splits them. Prints figures and same-run ratios; asserts nothing. Quality
on retrieval is measured separately: `rag eval retrieval ../shared/corpus/dev/scifact --split train` with
RAG_EMBEDDING_BACKEND=torch and =bf16, each into its own --store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ingest import machine  # noqa: E402

DEFAULT = REPO.parent / "shared" / "corpus" / "docs" / "en" / "debian-reference.en.pdf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--chunks", type=int, default=640, help="chunks per round (default 640)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from rag import RAG
    from rag.embeddings import LocalEmbeddings
    from rag.loaders import load_file

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(p) for p in args.paths] or ([DEFAULT] if DEFAULT.exists() else sorted((REPO / "data").iterdir()))
    rag = RAG(store=Path(tempfile.mkdtemp()) / "store")
    texts: list[str] = []
    for path in paths:
        texts += [c.page_content for c in rag.splitter.split(load_file(path).documents)]
    texts = texts[: args.chunks]
    model_dir = rag.embedding_model_dir
    fp32 = LocalEmbeddings(model_dir, rag.settings.embedding_model, backend="torch")
    bf16 = LocalEmbeddings(model_dir, rag.settings.embedding_model, backend="bf16")
    print(f"machine: {machine()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(texts)} chunks from "
          f"{', '.join(p.name for p in paths)}; batch size {fp32.batch_size}; bf16 layers packed: {bf16.packed_linears}")
    for emb in (fp32, bf16):
        emb.embed_documents(texts[:64])  # warm-up: first-call allocations and kernel compilation

    def timed(emb: LocalEmbeddings):
        start = time.perf_counter()
        vectors = np.asarray(emb.embed_documents(texts))
        return len(texts) / (time.perf_counter() - start), vectors

    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        a, va = timed(fp32)
        b, vb = timed(bf16)
        rates["fp32"].append(a)
        rates["bf16"].append(b)
        cos = (va * vb).sum(axis=1)
        print(f"round {r + 1}: sentence-transformers float32 encode {a:.1f} chunks/s, bf16 {b:.1f} chunks/s, "
              f"ratio {b / a:.2f}; cosine mean {cos.mean():.5f}, min {cos.min():.5f}")
    fa, fb = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    total_a, total_b = sum(1 / x for x in rates["fp32"]), sum(1 / x for x in rates["bf16"])
    print(f"median: float32 {fa:.1f} chunks/s, bf16 {fb:.1f} chunks/s; bf16/float32 {fb / fa:.2f} "
          f"(over all rounds {total_a / total_b:.2f})")


if __name__ == "__main__":
    main()
