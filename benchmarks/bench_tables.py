"""Tables before and after issue 16 part 3: retrieval hit@k on the table dev set (benchmarks/tables.jsonl) with tables
flattened as before (cells joined by " | ", PDFs as plain pypdf text) and as Markdown tables, and the cost of
pdfplumber's table pass per PDF page.

    python benchmarks/bench_tables.py [--corpus ../shared/corpus] [--k 4] [--cost-pages 60] [--pdf-pages 40-60]

A question is a hit when one of the top k chunks has, on one line, its row's key and one of its answers (and comes
from its page, for a PDF): the answer row, whole, was retrieved. Rankings: dense (the packaged embedder, cosine),
BM25 (bm25s) and both fused by reciprocal rank (k 60), as the default retriever does. Prints figures and same-run
ratios, never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\|(.*)\|[ \t]*$")
_RULE = re.compile(r"^\|(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*$")


def flatten(text: str) -> str:
    """Markdown tables back to the former flattened form: a row's non-empty cells joined by " | ", no rule line."""
    out = []
    for line in text.split("\n"):
        if _RULE.match(line):
            continue
        row = _ROW.match(line)
        if row:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.group(1))]
            line = " | ".join(c for c in cells if c)
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def load(corpus: Path, sources: list[str], tables: bool, pdf_pages: list[int] | None):
    from langchain_core.documents import Document

    from rag.loaders import load_file

    docs = []
    for source in sources:
        path, pages = corpus / source, None
        if pdf_pages and source.endswith(".pdf"):  # only these pages (a loaded machine), numbered as in the file
            path, pages = _pdf_part(path, pdf_pages), pdf_pages
        for doc in load_file(path, pdf_tables=tables).documents:
            text = doc.page_content if tables else flatten(doc.page_content)
            meta = {**doc.metadata, "source": source}
            if pages:
                meta["page"] = pages[doc.metadata["page"] - 1]
            docs.append(Document(text, metadata=meta))
    return docs


def _pdf_part(path: Path, pages: list[int]) -> Path:
    from pypdf import PdfReader, PdfWriter

    reader, writer = PdfReader(path), PdfWriter()
    for number in pages:
        writer.add_page(reader.pages[number - 1])
    part = Path(tempfile.gettempdir()) / f"bench-tables-{path.stem}.pdf"
    writer.write(part)
    return part


def page_list(spec: str) -> list[int]:
    """"40-60,200-215" -> [40, ..., 60, 200, ..., 215]."""
    pages: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        pages.extend(range(int(first), int(last or first) + 1))
    return pages


def rankings(chunks, questions, embeddings, k: int) -> dict[str, list[list[int]]]:
    """Per question, the indexes of the top k chunks: dense, BM25 and fused."""
    import bm25s
    import numpy as np

    texts = [c.page_content for c in chunks]
    vectors = np.asarray(embeddings.embed_documents(texts))
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    out: dict[str, list[list[int]]] = {"dense": [], "bm25": [], "hybrid": []}
    for q in questions:
        query = np.asarray(embeddings.embed_query(q["question"]))
        dense = list(np.argsort(-(vectors @ query))[:60])
        ids, _ = retriever.retrieve(bm25s.tokenize([q["question"]], stopwords="en", show_progress=False),
                                    k=min(60, len(texts)), show_progress=False)
        lexical = [int(i) for i in ids[0]]
        fused: dict[int, float] = {}
        for ranking in (dense, lexical):
            for rank, i in enumerate(ranking):
                fused[int(i)] = fused.get(int(i), 0.0) + 1 / (60 + rank + 1)
        out["dense"].append([int(i) for i in dense[:k]])
        out["bm25"].append(lexical[:k])
        out["hybrid"].append(sorted(fused, key=lambda i: -fused[i])[:k])
    return out


def is_hit(question: dict, chunk) -> bool:
    if question["page"] is not None and chunk.metadata.get("page") != question["page"]:
        return False
    if chunk.metadata["source"] != question["source"]:
        return False
    return any(question["row"] in line and any(a in line for a in question["answers"])
               for line in chunk.page_content.split("\n"))


def retrieval(corpus: Path, questions: list[dict], k: int, pdf_pages: list[int] | None) -> None:
    from rag.api import RAG
    from rag.config import Settings
    from rag.models import packaged as models
    from rag.splitting import Splitter, token_counter

    settings = Settings.load(config_file=None, env={}, overrides={"store": REPO / ".bench-unused"})
    embeddings = RAG(settings).embeddings
    splitter = Splitter(token_counter(models.embedding_model_path("all-MiniLM-L6-v2")), settings.chunk_size,
                        settings.chunk_overlap)
    sources = sorted({q["source"] for q in questions})
    results = {}
    for label, tables in (("before (flattened)", False), ("after (Markdown)", True)):
        started = time.perf_counter()
        chunks = splitter.split(load(corpus, sources, tables, pdf_pages))
        ranked = rankings(chunks, questions, embeddings, k)
        results[label] = {name: sum(any(is_hit(q, chunks[i]) for i in top) for q, top in zip(questions, lists))
                          for name, lists in ranked.items()}
        print(f"{label}: {len(chunks)} chunks, {time.perf_counter() - started:.0f} s; hit@{k} of {len(questions)}: "
              + ", ".join(f"{name} {hits} ({hits / len(questions):.2f})" for name, hits in results[label].items()))


def cost(corpus: Path, pages: int) -> None:
    """Per-page load time of a few PDFs with and without the table pass (the first `pages` pages of each)."""
    from pypdf import PdfReader, PdfWriter

    from rag.loaders import load_file

    for name in ("docs/en/R-FAQ.pdf", "docs/en/R-intro.pdf", "docs/en/debian-reference.en.pdf",
                 "docs/zh/debian-reference.zh-cn.pdf"):
        reader = PdfReader(corpus / name)
        count = min(pages, len(reader.pages))
        part = Path(tempfile.gettempdir()) / "bench-tables-cost.pdf"
        writer = PdfWriter()
        for page in reader.pages[:count]:
            writer.add_page(page)
        writer.write(part)
        times = {}
        for tables in (False, True, False, True):  # interleaved: the machine is shared
            started = time.perf_counter()
            docs = load_file(part, pdf_tables=tables, ocr="never").documents
            times.setdefault(tables, []).append(time.perf_counter() - started)
            with_tables = sum("\n| --- " in d.page_content for d in docs) if tables else None
            if with_tables is not None:
                found = with_tables
        part.unlink()
        off, on = (min(times[False]) / count * 1000, min(times[True]) / count * 1000)
        print(f"{name} ({count} pages): plain {off:.0f} ms/page, with tables {on:.0f} ms/page "
              f"({on / off:.2f}x, +{on - off:.0f} ms/page); {found} pages with a table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--questions", type=Path, default=REPO / "benchmarks" / "tables.jsonl")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--cost-pages", type=int, default=60, help="pages of each PDF timed (0: skip the cost part)")
    parser.add_argument("--no-retrieval", action="store_true")
    parser.add_argument("--pdf-pages", type=page_list, default=None,
                        help='read only these PDF pages, e.g. "40-60,200-215" (default: whole files)')
    args = parser.parse_args()
    from rag import privacy

    privacy.apply()
    if args.cost_pages:
        cost(args.corpus, args.cost_pages)
    if not args.no_retrieval:
        questions = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines() if line]
        retrieval(args.corpus, questions, args.k, args.pdf_pages)


if __name__ == "__main__":
    main()
