"""Cross-lingual retrieval (issue 17 part 2), measured on benchmarks/crosslingual.jsonl.

Chinese questions whose answer is in an English document and English questions whose answer is in a Chinese one,
asked of the retriever `rag ask` uses.

    python benchmarks/bench_crosslingual.py [--set FILE] [--docs DIR] [--stores DIR] [--one-store]
        [--embedding-model NAME] [--embedding-backend auto|torch|bf16] [--embedding-url URL]
        [--embedding-api-key KEY] [--config rag.toml] [--retrieval hybrid|dense|bm25] [--direction zh->en|en->zh]
        [--json FILE]

Only the files the set cites are ingested, through `RAG.ingest` with default settings (plus the flags above), into
a store per direction (temporary unless --stores): zh->en questions are asked of the English files, en->zh
questions of the Chinese ones, so that the other language's twin of a document (the Debian chapter exists in both)
cannot answer in the question's own language. --one-store puts every file in one store instead.

A fresh `RAG` over the built store answers, as `rag ask` does (its light question embedder). A question is a hit at
rank r when the r-th chunk contains its snippet (compared on letters and digits only, casefolded) or comes from its
file and page. Prints hit@1, hit@4, MRR@10 per direction and overall; "usable@4" also needs the hit's relevance
to reach `min_score` (below it `rag ask` drops the chunk); then every miss. Never asserts on anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from rag import RAG
from rag.config import ConfigError, Settings

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO.parent / "shared" / "corpus" / "docs"
DEPTH = 10  # chunks asked per question: MRR@10
DIRECTIONS = {"zh": "zh->en", "en": "en->zh"}  # question language -> direction


def norm(text: str) -> str:
    """Letters and digits only, casefolded: a snippet matches whatever spaces, markup or line breaks the
    loaders left (pypdf's spaces inside CJK words, Markdown backticks)."""
    return "".join(c for c in text.casefold() if c.isalnum())


def load_set(path: Path) -> list[dict]:
    try:
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {path}: {exc}") from None
    for n, item in enumerate(items, 1):
        if item.get("language") not in DIRECTIONS or not {"question", "source", "snippet"} <= item.keys():
            raise SystemExit(f"error: {path}:{n}: needs question, language (zh or en), source and snippet")
    for item in items:
        item["direction"] = DIRECTIONS[item["language"]]
        item["_snippet"] = norm(item["snippet"])
    return items


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} logical CPUs, python {platform.python_version()}, nice {os.nice(0)}"


def settings_for(args: argparse.Namespace, store: Path) -> Settings:
    overrides = {"store": store, "embedding_model": args.embedding_model, "embedding_backend": args.embedding_backend,
                 "embedding_url": args.embedding_url, "embedding_api_key": args.embedding_api_key,
                 "retrieval": args.retrieval, "translate_questions": args.translate}
    return Settings.load(config_file=args.config, env={}, overrides=overrides)


def build_store(settings: Settings, files: list[Path]) -> tuple[int, float]:
    """Ingest `files` (a store built before is only checked); returns (chunks, seconds)."""
    rag = RAG(settings)
    t = time.perf_counter()
    report = rag.ingest(*files)
    seconds = time.perf_counter() - t
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed[0]}")
    chunks = rag.store.count()
    rag.store.close()
    return chunks, seconds


def check_snippets(rag: RAG, items: list[dict], docs: Path) -> list[str]:
    """Set problems: a question whose snippet no chunk of its file holds (then only file+page can hit)."""
    text_of: dict[str, str] = {}
    for rec in rag.files():
        chunks = rag.store.get(rec.chunk_ids)
        text_of[rec.source] = "\n".join(norm(text) for text, _meta, _score in chunks.values())
    problems = []
    for item in items:
        source = str((docs / item["source"]).resolve())
        if source not in text_of:
            problems.append(f"{item['id']}: {item['source']} is not in the store")
        elif item["_snippet"] not in text_of[source]:
            problems.append(f"{item['id']}: no chunk of {item['source']} holds the snippet {item['snippet']!r}")
    return problems


def is_hit(doc, item: dict, docs: Path) -> bool:
    if item["_snippet"] in norm(doc.page_content):
        return True
    same_file = doc.metadata.get("source") == str((docs / item["source"]).resolve())
    return same_file and "page" in item and doc.metadata.get("page") == item["page"]


def ask(rag: RAG, item: dict, docs: Path) -> dict:
    """The question's rank (1-based, None beyond DEPTH), whether the hit reaches min_score, the top chunk."""
    found = rag.retriever.invoke(item["question"], k=DEPTH)
    rank = next((r for r, doc in enumerate(found, 1) if is_hit(doc, item, docs)), None)
    usable = rank is not None and rank <= 4 and any(
        is_hit(doc, item, docs) and float(doc.metadata.get("score", 0.0)) >= rag.settings.min_score for doc in found[:4])
    top = found[0] if found else None
    same_as_k4 = [d.page_content for d in rag.retriever.invoke(item["question"], k=4)] == [d.page_content for d in found[:4]]
    translation = next((d.metadata["query"] for d in found if "query" in d.metadata), None)
    return {"id": item["id"], "direction": item["direction"], "question": item["question"], "rank": rank,
            "usable": usable, "same_as_k4": same_as_k4, "translation": translation,
            "top": None if top is None else {"source": Path(str(top.metadata.get("source", ""))).name,
                                             "page": top.metadata.get("page"),
                                             "score": round(float(top.metadata.get("score", 0.0)), 3),
                                             "text": " ".join(top.page_content.split())[:80]}}


def figures(results: list[dict]) -> dict[str, float]:
    n = max(len(results), 1)
    ranks = [r["rank"] for r in results]
    return {"n": len(results), "hit@1": sum(r == 1 for r in ranks) / n,
            "hit@4": sum(r is not None and r <= 4 for r in ranks) / n,
            "usable@4": sum(r["usable"] for r in results) / n,
            "mrr@10": sum(1.0 / r for r in ranks if r is not None) / n}


def report(results: list[dict]) -> None:
    print("\n| direction | questions | hit@1 | hit@4 | usable@4 | MRR@10 |\n|---|---|---|---|---|---|")
    for name in ("zh->en", "en->zh", "overall"):
        part = [r for r in results if name == "overall" or r["direction"] == name]
        if not part:
            continue
        f = figures(part)
        print(f"| {name} | {f['n']} | {f['hit@1']:.3f} | {f['hit@4']:.3f} | {f['usable@4']:.3f} | {f['mrr@10']:.3f} |")
    print("\nmisses at 4 (rank within 10, or -; the top chunk: file, page, relevance, text):")
    for r in results:
        if r["rank"] is None or r["rank"] > 4:
            top = r["top"] or {}
            print(f"  {r['id']} rank {r['rank'] or '-'}: {r['question']}\n"
                  f"      searched as: {r.get('translation') or '(as typed)'}\n"
                  f"      top: {top.get('source')} p{top.get('page')} {top.get('score')} {top.get('text')!r}")
    differ = [r["id"] for r in results if not r["same_as_k4"]]
    print(f"\ntop 4 of k={DEPTH} == the k=4 answer (what rag ask retrieves): "
          f"{'all questions' if not differ else 'NOT for ' + ', '.join(differ)}")


def groups(items: list[dict], one_store: bool) -> dict[str, list[dict]]:
    if one_store:
        return {"all": items}
    by_direction = {d: [i for i in items if i["direction"] == d] for d in DIRECTIONS.values()}
    return {d: part for d, part in by_direction.items() if part}


def run(args: argparse.Namespace, stores: Path, items: list[dict]) -> list[dict]:
    docs = Path(args.docs).resolve()
    results: list[dict] = []
    for name, part in groups(items, args.one_store).items():
        files = sorted({docs / i["source"] for i in part})
        settings = settings_for(args, stores / name.replace("->", "-"))
        chunks, seconds = build_store(settings, files)
        print(f"{name}: {len(part)} questions, {len(files)} files, {chunks} chunks, ingest {seconds:.1f} s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        rag = RAG(settings)  # fresh, as `rag ask` opens the store: the light question embedder
        for problem in check_snippets(rag, part, docs):
            print(f"  SET PROBLEM {problem}")
        rag.retriever.invoke(part[0]["question"])  # loads BM25 and the question embedder: not timed
        t = time.perf_counter()
        results.extend(ask(rag, item, docs) for item in part)
        print(f"  {1000 * (time.perf_counter() - t) / len(part):.0f} ms per question (two retrievals each)", flush=True)
        rag.store.close()
        f = figures(results[-len(part):])
        print(f"  hit@1 {f['hit@1']:.3f}  hit@4 {f['hit@4']:.3f}  usable@4 {f['usable@4']:.3f}  MRR@10 {f['mrr@10']:.3f}",
              flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default=str(REPO / "benchmarks" / "crosslingual.jsonl"))
    ap.add_argument("--docs", default=str(DOCS), help="folder the set's `source` paths are relative to")
    ap.add_argument("--stores", default=None, help="folder for the stores (kept, re-runs skip the ingest; default: temporary)")
    ap.add_argument("--one-store", action="store_true", help="every file in one store (both languages together)")
    ap.add_argument("--direction", default=None, choices=sorted(DIRECTIONS.values()), help="only these questions")
    ap.add_argument("--embedding-model", default=None)
    ap.add_argument("--embedding-backend", default=None, choices=["auto", "torch", "bf16"])
    ap.add_argument("--embedding-url", default=None)
    ap.add_argument("--embedding-api-key", default=None)
    ap.add_argument("--retrieval", default=None, choices=["hybrid", "dense", "bm25"])
    ap.add_argument("--translate", default=None, choices=["auto", "on", "off"],
                    help="translate_questions (default: the settings'; off: the question as typed, the baseline)")
    ap.add_argument("--config", default=None, help="a rag.toml to start from (default: ./rag.toml when present)")
    ap.add_argument("--json", default=None, help="write the per-question results here")
    args = ap.parse_args()
    items = [i for i in load_set(Path(args.set)) if args.direction in (None, i["direction"])]
    try:
        probe = settings_for(args, Path("unused"))
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    print(f"settings: embedding_model {probe.embedding_model!r}, backend {probe.embedding_backend}, url "
          f"{probe.embedding_url}, retrieval {probe.retrieval}, chunk_size {probe.chunk_size}/{probe.chunk_overlap}, "
          f"min_score {probe.min_score}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-crosslingual-") as tmp:
        results = run(args, Path(args.stores) if args.stores else Path(tmp), items)
    report(results)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
