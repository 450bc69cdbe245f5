"""Speed of the BM25 index at 100k chunks: a full build, opening it (memory-mapped), adding a 50-chunk file,
deleting one, and queries, against what the index did before (bm25s rebuilt whole after any change).

    python benchmarks/bench_bm25.py [--corpus FILE] [--chunks N] [--words W] [--queries FILE]

The chunks are real text made many: SciFact's abstracts (../shared/corpus/dev/scifact/corpus.jsonl) joined into
one stream of words and cut into W-word pieces (default 150, about 200 model tokens), each copy of the stream cut
at another offset and with 1 word in 50 given a copy-specific suffix (new rare words, as a growing collection
has); 50 chunks make a file. "Before" is bm25s over the same words: tokenise every chunk, index, save (the
reading of every chunk back from Chroma that also came with it is not counted). Prints figures and same-run
ratios; never asserts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "corpus" / "dev" / "scifact"
FILE_CHUNKS = 50


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_chunks(corpus: Path, n: int, words: int) -> list[str]:
    stream = []
    with corpus.open() as fh:
        for line in fh:
            doc = json.loads(line)
            stream += f"{doc.get('title', '')} {doc['text']}".split()
    chunks: list[str] = []
    copy = 0
    while len(chunks) < n:
        offset = (copy * 37) % words
        for start in range(offset, len(stream) - words, words):
            piece = stream[start:start + words]
            if copy:
                piece = [w + f"x{copy}" if i % 50 == copy % 50 else w for i, w in enumerate(piece)]
            chunks.append(" ".join(piece))
            if len(chunks) == n:
                break
        copy += 1
    return chunks


def ids_of(n: int) -> tuple[list[str], list[str]]:
    """Chunk ids shaped as the store's (file key - chunk number) and each chunk's file key."""
    groups = [f"{i // FILE_CHUNKS:016x}" for i in range(n)]
    return [f"{g}-{i % FILE_CHUNKS:06d}" for i, g in enumerate(groups)], groups


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - start, out


def before(folder: Path, ids: list[str], texts: list[str]) -> dict[str, float]:
    """The former index: every chunk tokenised, bm25s indexes them, saved with ids.json; opened without mmap."""
    import bm25s

    from rag.storage.lexical import BM25_B, BM25_K1, tokenize

    t_tok, tokens = timed(lambda: [tokenize(t) or ["\u2205"] for t in texts])
    bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    t_index, _ = timed(bm25.index, tokens, show_progress=False)
    t_save, _ = timed(lambda: (bm25.save(str(folder)), (folder / "ids.json").write_text(json.dumps({"ids": ids}))))
    t_open, loaded = timed(lambda: (bm25s.BM25.load(str(folder)), json.loads((folder / "ids.json").read_text())))
    return {"tokenise": t_tok, "index": t_index, "save": t_save, "build": t_tok + t_index + t_save, "open": t_open,
            "bm25": loaded[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(SCIFACT / "corpus.jsonl"))
    ap.add_argument("--queries", default=str(SCIFACT / "queries.jsonl"))
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--words", type=int, default=150)
    ap.add_argument("--adds", type=int, default=20, help="50-chunk files added one after another")
    args = ap.parse_args()
    from rag.storage.lexical import LexicalIndex, tokenize

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), python {platform.python_version()}")
    texts = make_chunks(Path(args.corpus), args.chunks, args.words)
    ids, groups = ids_of(len(texts))
    tokens = sum(len(tokenize(t)) for t in texts[:1000]) / 1000
    print(f"{len(texts)} chunks of {args.words} words ({tokens:.0f} BM25 words on average), {len(texts) // FILE_CHUNKS} files")
    queries = [json.loads(line)["text"] for line in Path(args.queries).open()][:200]
    extra = make_chunks(Path(args.corpus), FILE_CHUNKS * (args.adds + 1), args.words // 2)
    with tempfile.TemporaryDirectory(prefix="bench-bm25-") as tmp:
        old = before(Path(tmp) / "old", ids, texts)
        index = LexicalIndex(Path(tmp) / "bm25")
        t_build, _ = timed(index.build, ids, texts, "r0", groups)
        t_open = min(timed(LexicalIndex(Path(tmp) / "bm25").load)[0] for _ in range(5))
        adds = []
        for n in range(args.adds):
            file_ids = [f"{'a' * 12}{n:04x}-{i:06d}" for i in range(FILE_CHUNKS)]
            piece = extra[n * FILE_CHUNKS:(n + 1) * FILE_CHUNKS]
            adds.append(timed(index.update, [file_ids[0][:16]], file_ids, piece, f"a{n}", [file_ids[0][:16]] * FILE_CHUNKS)[0])
        t_delete, _ = timed(index.update, [groups[len(groups) // 2]], [], [], "d")
        t_reopen = min(timed(LexicalIndex(Path(tmp) / "bm25").load)[0] for _ in range(5))
        segments = len(json.loads((Path(tmp) / "bm25" / "index.json").read_text())["segments"])
        q_new = [timed(index.search, q, 100)[0] for q in queries]
        q_old = [timed(lambda q=q: _old_search(old["bm25"], tokenize(q)))[0] for q in queries]
        size = sum(f.stat().st_size for f in (Path(tmp) / "bm25").rglob("*") if f.is_file())
    report(old, t_build, t_open, t_reopen, adds, t_delete, segments, q_new, q_old, size)


def _old_search(bm25, tokens):
    return bm25.retrieve([tokens], k=100, show_progress=False, n_threads=1) if tokens else None


def report(old, t_build, t_open, t_reopen, adds, t_delete, segments, q_new, q_old, size) -> None:
    rebuild = old["build"]
    print(f"before (bm25s, rebuilt whole after any change): tokenise {old['tokenise']:.1f} s + index {old['index']:.1f} s "
          f"+ save {old['save']:.1f} s = {rebuild:.1f} s per change; open {old['open']:.3f} s")
    print(f"full build (tokenise + segment): {t_build:.1f} s ({t_build / rebuild:.2f}x the former rebuild); "
          f"{size / 1e6:.0f} MB on disk")
    print(f"open (memory-mapped): {t_open * 1000:.1f} ms; after the adds and the delete ({segments} segments) "
          f"{t_reopen * 1000:.1f} ms ({t_reopen / old['open']:.3f}x the former open)")
    print(f"add a {FILE_CHUNKS}-chunk file: first {adds[0] * 1000:.0f} ms, median {statistics.median(adds) * 1000:.0f} ms, "
          f"max {max(adds):.2f} s over {len(adds)} (merges included); median/former rebuild "
          f"{statistics.median(adds) / rebuild:.5f}")
    print(f"delete a file: {t_delete * 1000:.0f} ms ({t_delete / rebuild:.5f}x the former rebuild)")
    print(f"query (k 100, {len(q_new)} SciFact queries): median {statistics.median(q_new) * 1000:.1f} ms, "
          f"p90 {statistics.quantiles(q_new, n=10)[-1] * 1000:.1f} ms; bm25s on the same chunks "
          f"{statistics.median(q_old) * 1000:.1f} ms (ratio {statistics.median(q_new) / statistics.median(q_old):.2f})")


if __name__ == "__main__":
    main()
