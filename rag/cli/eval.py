"""`rag eval`: measure retrieval and answering on benchmark files (a thin click shell over rag/eval).

    rag eval retrieval DIR|FILE [--retrieval hybrid|dense|bm25] [--store DIR] [--split S] [--json]
    rag eval qa FILE --store DIR [--ingest-contexts] [--model M] [--limit N] [--json]

Only click and the standard library are imported here; everything heavy is imported when a command runs, so
`rag --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from rag.cli.common import CONTEXT_SETTINGS, IngestProgress, handle_errors, make_rag


@contextmanager
def _bar(length: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A click progress bar on stderr (so that --json output stays clean), or nothing."""
    if not enabled or length <= 0:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


@click.group(context_settings=CONTEXT_SETTINGS)
def eval_group() -> None:
    """Measure retrieval and answer quality on benchmark sets (BEIR, CMRC2018, SQuAD, JSONL)."""


@eval_group.command("retrieval")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--split", default=None, help="BEIR qrels split (default: the only one, else 'test').")
@click.option("--retrieval", type=click.Choice(["hybrid", "dense", "bm25"]), default=None,
              help="Retrieval mode to measure (default: the configured one, hybrid).")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store folder to build or reuse (default: a temporary one). Re-runs only re-ingest what changed.")
@click.option("--limit-queries", type=click.IntRange(1), default=None, help="Evaluate only the first N queries.")
@click.option("--k", "k", type=click.IntRange(1), default=300, show_default=True,
              help="Chunks asked of the retriever per query, rolled up to at most 100 documents (a document ranks "
                   "at its best chunk).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--per-query", is_flag=True, help="With --json: include every query's scores.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
@handle_errors
def retrieval_cmd(ctx: click.Context, dataset: Path, split: str | None, retrieval: str | None, store: Path | None,
                  limit_queries: int | None, k: int, as_json: bool, per_query: bool, quiet: bool) -> None:
    """Retrieval quality on DATASET: nDCG@10, Recall@10, Recall@100, MRR@10 and hit@1.

    DATASET is a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or a CMRC2018 / SQuAD JSON file
    (each passage a document, each question a query whose own passage is the relevant one). The documents
    are ingested through the normal ingest path into --store, then every query is asked of the retriever.
    """
    from rag.eval import load_retrieval_set

    data = load_retrieval_set(dataset, split).limited(limit_queries)
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        rag = make_rag(ctx, store=store or Path(tmp) / "store", retrieval=retrieval, k=k)
        report = _run_retrieval(rag, data, show=not quiet)
    if as_json:
        click.echo(json.dumps(report.to_dict(per_query=per_query), ensure_ascii=False, indent=2))
        return
    click.echo(f"{report.dataset}: {report.queries} queries, {report.documents} documents ({report.chunks} chunks); "
               f"retrieval {report.mode}, {report.k} chunks per query")
    for name, value in report.metrics.items():
        click.echo(f"  {name:<11}{value:.4f}")
    click.echo(f"ingest {report.ingest_seconds:.1f} s; queries {report.query_seconds:.1f} s "
               f"({1000 * report.query_seconds / max(report.queries, 1):.0f} ms per query)")


def _run_retrieval(rag: Any, data: Any, show: bool) -> Any:
    from rag.eval import prepare_store, run_queries

    ingest_bar = IngestProgress(show)
    try:
        id_of, seconds = prepare_store(rag, data, ingest_bar)
    finally:
        ingest_bar.close()
    with _bar(len(data.queries), "querying", show) as update:
        return run_queries(rag, data, id_of, seconds, update)


@eval_group.command("qa")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store to answer from (env RAG_STORE; default ./vectorstore).")
@click.option("--ingest-contexts", is_flag=True,
              help="First ingest the file's passages (SQuAD, CMRC2018, JSONL 'context') into the store.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Ask only the first N questions.")
@click.option("--model", default=None, help="Chat model: qwen2.5-coder-1.5b (default), smollm2-135m, or a GGUF path.")
@click.option("--k", type=click.IntRange(1, 100), default=None, help="Passages retrieved per question (default 4).")
@click.option("--retrieval", type=click.Choice(["hybrid", "dense", "bm25"]), default=None, help="Retrieval mode.")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Longest answer in tokens (default 512).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--per-question", is_flag=True, help="With --json: include every question, its answer, timings, "
              "scores, prompt tokens, the refusal's cause (threshold or model) and the retrieved passages (file, "
              "page, score, shown to the model, holds a reference answer).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
def qa_cmd(ctx: click.Context, file: Path, store: Path | None, ingest_contexts: bool, limit: int | None,
           model: str | None, k: int | None, retrieval: str | None, max_tokens: int | None, as_json: bool,
           per_question: bool, quiet: bool) -> None:
    """Answer quality on FILE: share of answers containing a reference answer, share of correct refusals on
    questions without an answer, and p50/p90 latency of retrieval, first token and whole answer.

    FILE is JSONL ({"question": ..., "answers": [...]}, an empty list meaning unanswerable), SQuAD JSON or
    CMRC2018 JSON, detected by content.
    """
    from rag.eval import evaluate_qa, ingest_contexts as do_ingest, load_qa

    items = load_qa(file)
    rag = make_rag(ctx, store=store, model=model, k=k, retrieval=retrieval, max_tokens=max_tokens)
    if ingest_contexts:
        report = do_ingest(rag, items)
        if not quiet:
            click.echo(f"contexts: {len(report.ingested)} ingested, {len(report.unchanged)} unchanged, "
                       f"{len(report.failed)} failed", err=True)
    items = items[:limit] if limit else items
    with _bar(len(items), "asking", not quiet) as update:
        qa = evaluate_qa(rag, items, file.name, progress=update)
    d = qa.to_dict(per_question=per_question)
    click.echo(json.dumps(d, ensure_ascii=False, indent=2) if as_json else _qa_text(d))


def _qa_text(d: dict[str, Any]) -> str:
    """`rag eval qa`'s report as lines of text."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [f"{d['dataset']}: {d['questions']} questions ({d['answerable']} answerable, "
             f"{d['unanswerable']} without an answer); model {d['model']}",
             f"  answer contains a reference   {pct(d['answer_contains_reference'])}",
             f"  false refusals (answerable)   {pct(d['false_refusals'])}",
             f"  correct refusals (no answer)  {pct(d['correct_refusals'])}",
             f"  exact match / F1 (SQuAD)      {pct(d['exact_match'])} / {pct(d['f1'])}",
             f"  reference in the passages     {pct(d['reference_shown'])}; refused all the same "
             f"{pct(d['false_refusals_with_reference_shown'])}",
             f"  refused by the threshold      {pct(d['refused_by_threshold'])} of all questions (the model not asked)",
             f"  prompt tokens                 p50 {d['prompt_tokens_p50']}"]
    for part, label in (("retrieval", "retrieval"), ("first_token", "first token"), ("total", "total")):
        lat = d["latency_seconds"][part]
        lines.append(f"  {label:<12} p50 {lat['p50']:.2f} s   p90 {lat['p90']:.2f} s")
    return "\n".join(lines)
