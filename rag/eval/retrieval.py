"""Retrieval evaluation: ingest a benchmark corpus, ask the normal retriever every query, roll chunk hits up to
documents and score the run (`evaluate_retrieval`, `RetrievalReport`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rag.config import ConfigError
from rag.eval.corpus import ingest_documents
from rag.eval.datasets import RetrievalSet
from rag.eval.metrics import score_run

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.documents import Document

    from rag.api import RAG

#: Documents kept per query after rolling chunks up (Recall@100 needs 100).
DEPTH = 100
#: Chunks asked of the retriever per query. Documents split into ~3 chunks (SciFact abstracts: 3.1) need about
#: 3x DEPTH chunks to fill 100 documents; 100 chunks gave only ~69 distinct documents per SciFact query.
CHUNKS = 300

Progress = Callable[[int], None]


def roll_up(docs: Sequence[Document], id_of: Mapping[str, str], depth: int = DEPTH) -> dict[str, float]:
    """Chunk hits (best first) -> document id -> score, where a document ranks at its best chunk (first
    occurrence) and scores decrease with rank. Chunks of files outside `id_of` are ignored."""
    ranked: dict[str, float] = {}
    for doc in docs:
        doc_id = id_of.get(str(doc.metadata.get("source", "")))
        if doc_id is None or doc_id in ranked:
            continue
        ranked[doc_id] = float(depth - len(ranked))
        if len(ranked) >= depth:
            break
    return ranked


@dataclass
class RetrievalReport:
    """The outcome of one retrieval evaluation (see `to_dict`)."""

    dataset: str
    mode: str
    queries: int
    documents: int
    chunks: int
    k: int
    metrics: dict[str, float]
    ingest_seconds: float
    query_seconds: float
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    run: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d.pop("run")
        if not per_query:
            d.pop("per_query")
        d["ms_per_query"] = round(1000 * self.query_seconds / max(self.queries, 1), 1)
        d["metrics"] = {k: round(v, 4) for k, v in self.metrics.items()}
        d["ingest_seconds"], d["query_seconds"] = round(self.ingest_seconds, 1), round(self.query_seconds, 1)
        return d


def retrieve_run(retriever: Any, queries: Mapping[str, str], id_of: Mapping[str, str], k: int, depth: int = DEPTH,
                 progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Ask `retriever` (a LangChain retriever) for `k` chunks per query; roll them up to documents."""
    run: dict[str, dict[str, float]] = {}
    for qid, text in queries.items():
        docs = retriever.invoke(text, k=k)
        run[qid] = roll_up(docs, id_of, depth)
        if progress:
            progress(1)
    return run


def prepare_store(rag: RAG, data: RetrievalSet,
                  progress: Callable[[str, object], None] | None = None) -> tuple[dict[str, str], float]:
    """Ingest `data.corpus` into `rag`'s store (incremental: a built store is reused as is). Returns
    (resolved file path -> document id, seconds)."""
    t = time.perf_counter()
    id_of, report = ingest_documents(rag, data.corpus, progress=progress)
    if report.failed:
        raise ConfigError(f"{len(report.failed)} document(s) could not be ingested, e.g. {report.failed[0]}")
    return id_of, time.perf_counter() - t


def run_queries(rag: RAG, data: RetrievalSet, id_of: Mapping[str, str], ingest_seconds: float = 0.0,
                progress: Progress | None = None, depth: int = DEPTH) -> RetrievalReport:
    """Ask `rag.retriever` every query for `rag.settings.k` chunks, roll up to documents and score."""
    rag.retriever.invoke(next(iter(data.queries.values())))  # loads the BM25 index and warms the model: not timed
    t = time.perf_counter()
    run = retrieve_run(rag.retriever, data.queries, id_of, rag.settings.k, depth, progress)
    query_seconds = time.perf_counter() - t
    means, per_query = score_run(data.qrels, run)
    return RetrievalReport(data.name, rag.settings.retrieval, len(data.queries), len(id_of), rag.store.count(),
                           rag.settings.k, means, ingest_seconds, query_seconds, per_query, run)


def evaluate_retrieval(rag: RAG, data: RetrievalSet, *, ingest_progress: Callable[[str, object], None] | None = None,
                       progress: Progress | None = None, depth: int = DEPTH) -> RetrievalReport:
    """`prepare_store` then `run_queries`: the retrieval mode and k (chunks per query) come from `rag.settings`."""
    id_of, ingest_seconds = prepare_store(rag, data, ingest_progress)
    return run_queries(rag, data, id_of, ingest_seconds, progress, depth)
