"""Answer evaluation: every question streamed through `RAG.chain` (timing retrieval, first token and whole
answer) and scored: right when the answer contains a reference answer, or, without one, when it refuses."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rag.config import ConfigError
from rag.eval.corpus import CONTEXTS_FOLDER, ingest_documents
from rag.eval.datasets import QAItem
from rag.eval.metrics import contains_answer, percentile

if TYPE_CHECKING:  # pragma: no cover
    from rag.api import RAG


@dataclass
class QAResult:
    """One question asked: the answer, whether it counts as right (contains a reference answer; for a question
    without answers: refused), and its timings in seconds from the question to the retrieved passages, to the
    first answer token, and to the end."""

    id: str
    question: str
    answers: list[str]
    answer: str
    refused: bool
    correct: bool
    retrieval: float
    first_token: float
    total: float


@dataclass
class QAReport:
    """Scores over a set of questions (see `to_dict`)."""

    dataset: str
    model: str
    results: list[QAResult]

    @property
    def answerable(self) -> list[QAResult]:
        return [r for r in self.results if r.answers]

    @property
    def unanswerable(self) -> list[QAResult]:
        return [r for r in self.results if not r.answers]

    def to_dict(self, per_question: bool = False) -> dict[str, Any]:
        def share(rows: list[QAResult], pred: Callable[[QAResult], bool]) -> float | None:
            return round(sum(map(pred, rows)) / len(rows), 4) if rows else None

        answerable, unanswerable = self.answerable, self.unanswerable
        d: dict[str, Any] = {
            "dataset": self.dataset,
            "model": self.model,
            "questions": len(self.results),
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "answer_contains_reference": share(answerable, lambda r: r.correct),
            "false_refusals": share(answerable, lambda r: r.refused),
            "correct_refusals": share(unanswerable, lambda r: r.refused),
            "latency_seconds": {
                part: {f"p{p}": round(percentile([getattr(r, part) for r in self.results], p), 3) for p in (50, 90)}
                for part in ("retrieval", "first_token", "total")
            },
        }
        if per_question:
            d["per_question"] = [asdict(r) for r in self.results]
        return d


def ask_timed(rag: RAG, question: str) -> tuple[Any, float, float, float]:
    """Stream one question through `rag.chain`: (Answer, seconds to the retrieved sources, to the first
    answer token, to the end)."""
    from rag.answer.chain import answer_from_output

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    t_sources = t_first = None
    for chunk in rag.chain.stream({"question": question, "chat_history": []}):
        now = time.perf_counter()
        for key, value in chunk.items():
            if key == "answer":
                if t_first is None and value:
                    t_first = now
                out["answer"] = out.get("answer", "") + value
            else:
                if key == "sources" and t_sources is None:
                    t_sources = now
                out[key] = value
    total = time.perf_counter() - t0
    retrieval = (t_sources - t0) if t_sources is not None else total
    first = (t_first - t0) if t_first is not None else total
    return answer_from_output(out), retrieval, first, total


def ingest_contexts(rag: RAG, items: Sequence[QAItem]) -> Any:
    """Write the questions' passages as files under `<store>/eval-contexts/` and ingest them (normal path)."""
    docs = {i.context_id: (i.title, i.context) for i in items if i.context_id is not None and i.context}
    if not docs:
        raise ConfigError("the questions come without passages: nothing to ingest (--ingest-contexts needs SQuAD, "
                          "CMRC2018, or JSONL with a \"context\" field)")
    _, report = ingest_documents(rag, docs, CONTEXTS_FOLDER, exclusive=False)
    return report


def evaluate_qa(rag: RAG, items: Sequence[QAItem], name: str = "",
                progress: Callable[[int], None] | None = None) -> QAReport:
    """Ask every question (fresh, no history) and score the answers. The chat model, the embedder and the
    BM25 index are loaded before the first timed question."""
    if rag.store.count() == 0:
        raise ConfigError(f"{rag.settings.store}: the store is empty; ingest documents first (or use --ingest-contexts)")
    rag.chain  # noqa: B018  loads the chat model
    rag.retriever.invoke(items[0].question)  # loads the embedder and the BM25 index
    results: list[QAResult] = []
    for item in items:
        answer, retrieval, first, total = ask_timed(rag, item.question)
        # Right: a reference answer in the text, or a refusal when the question has no answer.
        correct = (not answer.refused and contains_answer(answer.text, item.answers)) if item.answers else answer.refused
        results.append(QAResult(item.id, item.question, item.answers, answer.text, answer.refused, correct,
                                retrieval, first, total))
        if progress:
            progress(1)
    return QAReport(name, rag.settings.model, results)
