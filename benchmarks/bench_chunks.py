"""Chunk size and overlap swept on the development sets (issue 17 part 3): each setting gets its own store, built
by the project's own ingest, and `rag eval retrieval`'s scoring, reported on two fixed halves of the queries.

    python benchmarks/bench_chunks.py --stores DIR [--sets scifact,cmrc] [--settings 128/30,200/30,...]
        [--every 10] [--modes hybrid,dense] [--json FILE]

SciFact train (English, embedding_model all-MiniLM-L6-v2): the haystack is every abstract judged for a train query
plus every M-th other abstract in corpus.jsonl order (--every, default 10; --query-every keeps every M-th query
and only the abstracts judged for those), the same for every setting; nDCG@10 as
`rag eval retrieval` computes it (300 chunks per query rolled up to documents). CMRC2018 part 1 (Chinese,
embedding_model multilingual-e5-small; MiniLM when --zh-model says so): all 424 passages, MRR@10 and hit@1.
Halves: queries in file order, A = 1st, 3rd, 5th, ... and B = 2nd, 4th, ...; tune on A, check on B.
A size above what MiniLM's word pieces allow (254: `RAG.splitter` refuses it) is measured through a Splitter built
here with the same token counter: MiniLM's dense vectors then see only the first 254 pieces (BM25 sees the whole
chunk), which is what lifting the check would give; multilingual-e5-small (whose chunks are measured in MiniLM's
pieces too) reads 512 of its own tokens (1.3 characters each on CMRC2018), and a 400-piece CMRC2018 chunk holds at
most 377 of them: it is read whole. Stores are kept under --stores: a re-run ingests nothing.
Never asserts on anything; prints tables with the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

from langchain_core.documents import Document

from rag import RAG
from rag.config import Settings
from rag.eval import CHUNKS, document_text, load_retrieval_set, prepare_store, run_queries

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "corpus" / "dev"
SETS = {"scifact": ("all-MiniLM-L6-v2", ["ndcg@10", "recall@10", "mrr@10", "hit@1"]),
        "cmrc": ("multilingual-e5-small", ["mrr@10", "hit@1", "ndcg@10", "recall@10"])}
DEFAULT_SETTINGS = "128/30,200/30,254/30,300/30,400/30"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} logical CPUs, python {platform.python_version()}, nice {os.nice(0)}"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def dataset(name: str, every: int, zh_every: int = 1, query_every: int = 1):
    """The retrieval set with its fixed haystack."""
    if name == "scifact":
        data = load_retrieval_set(DEV / "scifact", "train")
        keep = list(data.queries)[::query_every]  # every M-th query in file order, and the abstracts judged for it
        data.queries, data.qrels = {q: data.queries[q] for q in keep}, {q: data.qrels[q] for q in keep}
        judged = {d for docs in data.qrels.values() for d in docs}
        data.corpus = {d: v for i, (d, v) in enumerate(data.corpus.items()) if d in judged or i % every == 0}
        return data
    data = load_retrieval_set(DEV / "cmrc2018" / "cmrc2018_dev_part1.json")
    if zh_every > 1:  # every M-th passage (file order) and the questions written on them
        data.corpus = {d: v for i, (d, v) in enumerate(data.corpus.items()) if i % zh_every == 0}
        data.queries = {q: t for q, t in data.queries.items() if next(iter(data.qrels[q])) in data.corpus}
        data.qrels = {q: data.qrels[q] for q in data.queries}
    return data


def open_rag(store: Path, model: str, size: int, overlap: int, mode: str = "hybrid", parts: dict | None = None) -> RAG:
    """A RAG over `store` with these chunk settings; `parts` (embeddings, query embeddings) are reused so the
    models load once. A size the check refuses gets a Splitter with the same token counter (see the docstring)."""
    settings = Settings.load(config_file=None, env={}, overrides={
        "store": store, "embedding_model": model, "chunk_size": size, "chunk_overlap": overlap,
        "retrieval": mode, "k": CHUNKS})
    rag = RAG(settings, **(parts or {}))
    try:
        rag.splitter  # noqa: B018 -- built (and checked) now, so a refused size is known before ingest
    except Exception as exc:  # ConfigError: chunk_size longer than the embedding model reads
        from rag.splitting import Splitter, token_counter

        print(f"  note: {exc}; measured with the check bypassed (MiniLM's vectors see the first 254 pieces; "
              "multilingual-e5-small reads 512 of its own tokens, windowed beyond)", flush=True)
        # cached_property: an instance attribute takes its slot, as RAG(...) does for the parts given to it.
        rag.splitter = Splitter(token_counter(rag.embedding_model_dir), size, overlap)
    return rag


def chat_token_counter(rag: RAG):
    """The default chat model's own token count (its vocabulary only, no weights): what a passage costs in the
    prompt. None when the model file is not there."""
    try:
        from llama_cpp import Llama

        vocab = Llama(model_path=str(rag.model_path), vocab_only=True, verbose=False)
    except Exception as exc:  # no model file, or llama.cpp cannot read it: the figure is left out
        print(f"  note: no chat-model token counts ({exc})", flush=True)
        return None
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False))


def chunk_stats(rag: RAG, data, chat_tokens=None) -> dict:
    """Chunks per corpus and their mean length (word pieces, characters and, with `chat_tokens`, the chat model's
    tokens), from the splitter the store used."""
    docs = [Document(page_content=document_text(*tc), metadata={"source": d}) for d, tc in data.corpus.items()]
    chunks = [c.page_content for c in rag.splitter.split(docs)]
    pieces = [rag.splitter.count_tokens(c) for c in chunks]
    out = {"chunks": len(chunks), "chunks_per_doc": round(len(chunks) / len(docs), 2),
           "mean_pieces": round(statistics.fmean(pieces), 1), "mean_chars": round(statistics.fmean(map(len, chunks)), 1)}
    if chat_tokens:
        out["mean_chat_tokens"] = round(statistics.fmean(map(chat_tokens, chunks)), 1)
    return out


def halves(per_query: dict[str, dict[str, float]], order: list[str]) -> dict[str, dict[str, float]]:
    """Means over half A (1st, 3rd, ... query in file order), half B (2nd, 4th, ...) and all."""
    groups = {"A": order[0::2], "B": order[1::2], "all": order}
    return {h: {m: math.fsum(per_query[q][m] for q in qs) / len(qs) for m in per_query[order[0]]}
            for h, qs in groups.items()}


def measure(name: str, data, stores: Path, model: str, size: int, overlap: int, modes: list[str], parts: dict,
            counters: dict) -> dict:
    store = stores / f"{name}-{model}-{size}-{overlap}"  # another haystack: ingest prunes and adds the difference
    rag = open_rag(store, model, size, overlap, parts=parts)
    parts.setdefault("embeddings", rag.embeddings)
    parts.setdefault("query_embeddings", rag.query_embeddings)
    if "chat_tokens" not in counters:
        counters["chat_tokens"] = chat_token_counter(rag) if counters.get("wanted") else None
    id_of, seconds = prepare_store(rag, data)
    row = {"set": name, "model": model, "size": size, "overlap": overlap, "ingest_s": round(seconds, 1),
           "stored_chunks": rag.store.count(), **chunk_stats(rag, data, counters["chat_tokens"]), "load": load()}
    for mode in modes:
        r = rag if mode == "hybrid" else open_rag(store, model, size, overlap, mode, {**parts, "store": rag.store})
        report = run_queries(r, data, id_of, seconds)
        row[mode] = halves(report.per_query, list(data.queries))
        row[mode]["ms_per_query"] = round(1000 * report.query_seconds / max(report.queries, 1))
    rag.store.close()
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict], name: str, metrics: list[str], mode: str) -> None:
    rows = [r for r in rows if r["set"] == name and mode in r]
    if not rows:
        return
    print(f"\n{name} ({rows[0]['model']}), {mode}; halves A/B of the queries (file order, alternate)")
    head = ["size/overlap", "chunks", "pieces", "chat tok x4"] + [f"{m} {h}" for m in metrics[:2] for h in ("A", "B")] + \
        [f"{m} all" for m in metrics[2:]] + ["ms/q", "ingest s", "load"]
    print(" | ".join(head))
    for r in sorted(rows, key=lambda r: (r["size"], r["overlap"])):
        m = r[mode]
        cells = [f"{r['size']}/{r['overlap']}", str(r["chunks"]), f"{r['mean_pieces']:.0f}",
                 f"{4 * r['mean_chat_tokens']:.0f}" if "mean_chat_tokens" in r else "-"]
        cells += [f"{m[h][x]:.4f}" for x in metrics[:2] for h in ("A", "B")] + [f"{m['all'][x]:.4f}" for x in metrics[2:]]
        cells += [str(m["ms_per_query"]), str(r["ingest_s"]), r["load"].split()[0]]
        print(" | ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=Path, required=True, help="folder for one store per set and setting (kept)")
    ap.add_argument("--sets", default="scifact,cmrc", help="scifact, cmrc or both")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="size/overlap pairs, comma-separated")
    ap.add_argument("--every", type=int, default=10, help="SciFact: keep every M-th unjudged abstract")
    ap.add_argument("--query-every", type=int, default=1, help="SciFact: keep every M-th query (file order)")
    ap.add_argument("--zh-every", type=int, default=1, help="CMRC2018: keep every M-th passage and its questions")
    ap.add_argument("--modes", default="hybrid", help="retrieval modes to score: hybrid, dense, bm25")
    ap.add_argument("--zh-model", default=SETS["cmrc"][0], help="embedding model of the CMRC2018 stores")
    ap.add_argument("--json", type=Path, help="append each row as a JSON line; with --table-only, read it")
    ap.add_argument("--chat-tokens", action="store_true",
                    help="count each chunk in the default chat model's tokens (prompt cost of 4 passages)")
    ap.add_argument("--table-only", action="store_true", help="print the tables of --json's rows, measure nothing")
    args = ap.parse_args()
    print(f"machine: {machine()}; load average at start {load()}", flush=True)
    rows: list[dict] = []
    if args.table_only:
        rows = [json.loads(line) for line in args.json.read_text().splitlines() if line.strip()]
    for name in ([] if args.table_only else args.sets.split(",")):
        data = dataset(name, args.every, args.zh_every, args.query_every)
        model = args.zh_model if name == "cmrc" else SETS[name][0]
        print(f"{name}: {len(data.queries)} queries, {len(data.corpus)} documents, model {model}", flush=True)
        parts: dict = {}
        counters = {"wanted": args.chat_tokens}
        for pair in args.settings.split(","):
            size, overlap = map(int, pair.split("/"))
            t = time.perf_counter()
            row = measure(name, data, args.stores, model, size, overlap, args.modes.split(","), parts, counters)
            row["seconds"] = round(time.perf_counter() - t)
            rows.append(row)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    for name, (_, metrics) in SETS.items():
        for mode in args.modes.split(","):
            table(rows, name, metrics, mode)
    print(f"\nload average at end {load()}")


if __name__ == "__main__":
    main()
