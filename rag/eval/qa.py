"""Answer evaluation: every question streamed through `RAG.chain` (timing retrieval, first token and whole
answer) and scored: right when the answer contains a reference answer, or, without one, when it refuses; with
SQuAD's exact match and token F1 beside, and per question what was retrieved and why a refusal happened."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rag.config import ConfigError
from rag.eval.corpus import CONTEXTS_FOLDER, ingest_documents
from rag.eval.datasets import QAItem
from rag.eval.metrics import contains_answer, exact_match, percentile, token_f1

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
    exact_match: float = 0.0
    f1: float = 0.0
    refused_by: str | None = None  # "threshold" (the model was not asked) or "model"
    prompt_tokens: int = 0
    support: float | None = None  # the support check's score (None: not checked)
    # A reference answer is in a passage the model was shown (None: the question has no reference answer).
    reference_shown: bool | None = None
    # Every retrieved passage: {"source" (file name), "page", "score", "shown", "has_reference"}.
    passages: list[dict[str, Any]] = field(default_factory=list)


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
        def median(values: list[int]) -> float | None:
            return round(percentile(values, 50), 1) if values else None

        def share(rows: list[QAResult], value: Callable[[QAResult], float]) -> float | None:
            """The mean of `value` (a share, for a yes/no) over `rows`."""
            return round(sum(map(value, rows)) / len(rows), 4) if rows else None

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
            "exact_match": share(answerable, lambda r: r.exact_match),
            "f1": share(answerable, lambda r: r.f1),
            "reference_shown": share(answerable, lambda r: bool(r.reference_shown)),
            "false_refusals_with_reference_shown": share(answerable, lambda r: r.refused and bool(r.reference_shown)),
            "refused_by_threshold": share(self.results, lambda r: r.refused_by == "threshold"),
            "prompt_tokens_p50": median([r.prompt_tokens for r in self.results if r.prompt_tokens]),
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


def _passages(answer: Any, references: list[str]) -> list[dict[str, Any]]:
    """Every retrieved passage, those the model was shown first, with its score and whether it holds a reference."""
    refused_by_threshold = answer.refused_by == "threshold"
    rows = [{"source": Path(s.source).name, "page": s.page, "score": round(s.score, 4), "shown": not refused_by_threshold,
             "has_reference": contains_answer(s.text, references) if references else None} for s in answer.context]
    rows += [{"source": Path(d["source"]).name, "page": d["page"], "score": round(d["score"], 4), "shown": False,
              "has_reference": None, "reason": d["reason"]} for d in answer.dropped]
    return rows


def score_answer(item: QAItem, answer: Any, seconds: tuple[float, float, float]) -> QAResult:
    """Score one answer: right when it contains a reference answer, or, for a question without one, refuses."""
    refs = item.answers
    correct = (not answer.refused and contains_answer(answer.text, refs)) if refs else answer.refused
    passages = _passages(answer, refs)
    scored = not answer.refused and bool(refs)
    return QAResult(item.id, item.question, refs, answer.text, answer.refused, correct, *seconds,
                    exact_match=exact_match(answer.text, refs) if scored else 0.0,
                    f1=round(token_f1(answer.text, refs), 4) if scored else 0.0,
                    refused_by=answer.refused_by, prompt_tokens=answer.prompt_tokens, support=answer.support,
                    reference_shown=any(p["shown"] and p["has_reference"] for p in passages) if refs else None,
                    passages=passages)


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
        results.append(score_answer(item, answer, (retrieval, first, total)))
        if progress:
            progress(1)
    return QAReport(name, rag.settings.model, results)
