"""Ingest throughput against the raw embedding throughput of exactly the same chunks, the cost of re-ingesting an
unchanged folder, and the peak memory of an ingest.

    python benchmarks/bench_ingest.py [PATH ...] [--backend auto|torch|bf16] [--no-rss]

PATH defaults to ../shared/corpus/docs (the team's shared corpus; skipped with a message when absent). Prints
figures and same-run ratios; never asserts on time. Peak RSS is measured in fresh subprocesses, one per case,
for ../shared/corpus/docs/en/debian-reference.en.pdf alone and for all PATHs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
DEFAULT = CORPUS / "docs"
BIG_PDF = DEFAULT / "en" / "debian-reference.en.pdf"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "?"
    try:
        flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split())
        isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags)
    except (OSError, StopIteration):
        isa = "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}; {os.cpu_count()} logical cores; {isa}; load average {load}; python {platform.python_version()}"


def rss_child(paths: list[str], backend: str) -> None:
    """Run in a fresh process: ingest `paths` into a temporary store, print peak RSS as JSON."""
    from rag import RAG

    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(store=Path(tmp) / "store")
        _use_backend(rag, backend)
        rag.embeddings.embed_documents(["warm-up"])
        rag.store.count()
        rag.splitter
        base = _vm("VmRSS")
        reset = _reset_peak()  # so that the peak below is the ingest's, not the model load's
        report = rag.ingest(*paths)
        peak = _vm("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reader = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the reader process, if any
    print(json.dumps({"base_mb": base, "peak_mb": peak, "peak_is_ingest_only": reset, "reader_mb": reader,
                      "chunks": report.chunks, "files": report.files}))


def _vm(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux), else the peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _use_backend(rag, backend: str) -> None:
    # Built here, so that the benchmark chooses the backend whatever the settings say.
    from rag.embeddings import LocalEmbeddings

    s = rag.settings
    rag.__dict__["embeddings"] = LocalEmbeddings(rag.embedding_model_dir, s.embedding_model, s.embedding_batch_size, backend=backend)


def peak_rss(paths: list[str], backend: str) -> dict | None:
    cmd = [sys.executable, __file__, "--rss-child", "--backend", backend, *paths]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        print(f"  (peak RSS run failed: {res.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--backend", default="auto", help="embedding backend for the ingest: auto, torch or bf16")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--reader", default="auto", help="where files are read: auto, process or thread")
    ap.add_argument("--no-rss", action="store_true", help="skip the two peak-RSS subprocesses")
    ap.add_argument("--rss-only", action="store_true", help="only the two peak-RSS subprocesses")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.paths, args.backend)
        return
    paths = args.paths or [str(DEFAULT)]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found (../shared/corpus is only in the team's checkouts)")
        return

    print(f"machine: {machine()}")
    if not args.rss_only:
        throughput(args, paths)
    if not args.no_rss:
        for label, case in ([("debian-reference.en.pdf alone", [str(BIG_PDF)])] if BIG_PDF.exists() else []) + [("all paths", paths)]:
            r = peak_rss(case, args.backend)
            if r:
                during = "during the ingest" if r["peak_is_ingest_only"] else "whole process"
                print(f"peak RSS, {label}: {r['peak_mb']:.0f} MB {during} (before it, model and store loaded: "
                      f"{r['base_mb']:.0f} MB); reader process peak {r['reader_mb']:.0f} MB; {r['files']} files, "
                      f"{r['chunks']} chunks")


def throughput(args, paths: list[str]) -> None:
    from rag import RAG
    from rag.ingest import discover
    from rag.loaders import LoadError, load_file

    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(store=Path(tmp) / "store")
        _use_backend(rag, args.backend)
        emb = rag.embeddings
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; embedding backend {args.backend} -> {emb.backend}; "
              f"batch size {emb.batch_size}; reader {args.reader}")
        # Exactly the chunks ingest will make (parsing and splitting not timed here).
        files, _ = discover(paths)
        texts: list[str] = []
        t = time.perf_counter()
        for path in files:
            try:
                texts += [c.page_content for c in rag.splitter.split(load_file(path).documents)]
            except LoadError:
                pass
        parse = time.perf_counter() - t
        emb.embed_documents(texts[:64])  # warm-up, both paths
        emb.model.encode(texts[:64], batch_size=emb.batch_size)

        def raw_backend() -> float:
            t0 = time.perf_counter()
            emb.embed_documents(texts)
            return len(texts) / (time.perf_counter() - t0)

        # Raw sentence-transformers encode (float32 unless the model was converted) of the same texts.
        if emb.backend == "torch":
            raw_st = None
        else:
            t0 = time.perf_counter()
            from rag.embeddings import LocalEmbeddings

            fp32 = LocalEmbeddings(rag.embedding_model_dir, "fp32", emb.batch_size, backend="torch")
            fp32.model.encode(texts[:64], batch_size=emb.batch_size)
            t0 = time.perf_counter()
            fp32.model.encode(texts, batch_size=emb.batch_size, normalize_embeddings=True)
            raw_st = len(texts) / (time.perf_counter() - t0)
            del fp32
        before = raw_backend()
        rag.store.count()
        from rag.ingest import Ingestor

        ingestor = Ingestor(rag.store, emb, rag.splitter, rag.fingerprint, rag.settings.password, reader=args.reader)
        report = ingestor.run(paths)
        ingest_rate = report.chunks / report.seconds
        after = raw_backend()
        raw = (before + after) / 2
        t0 = time.perf_counter()
        again = rag.ingest(*paths)
        re_seconds = time.perf_counter() - t0

        print(f"files {report.files} ({len(report.ingested)} ingested, {len(report.skipped)} skipped, {len(report.failed)} failed), "
              f"pages {report.pages}, chunks {report.chunks} (raw set {len(texts)}); load+split alone {parse:.1f} s")
        print(f"raw encode, backend {emb.backend} (embed_documents): {raw:.1f} chunks/s (before {before:.1f}, after {after:.1f})")
        if raw_st is not None:
            print(f"raw sentence-transformers model.encode, float32: {raw_st:.1f} chunks/s")
        print(f"rag ingest (load+split+embed+store): {ingest_rate:.1f} chunks/s in {report.seconds:.1f} s")
        print(f"ratio ingest/raw ({emb.backend}): {ingest_rate / raw:.2f}")
        if raw_st is not None:
            print(f"ratio ingest/raw sentence-transformers float32: {ingest_rate / raw_st:.2f}")
        print(f"re-ingest unchanged: {re_seconds:.2f} s ({len(again.unchanged)} unchanged, {len(again.failed)} failed), "
              f"{re_seconds / report.seconds:.1%} of the first ingest")


if __name__ == "__main__":
    main()
