"""The `rag` command: a thin click shell over `rag.api.RAG` (parse flags, call the API, print)."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rag import privacy
from rag.config import ConfigError, Settings

# Exit codes (documented in the README).
EXIT_USER_ERROR = 2  # bad flag, config, model or store: nothing was done
EXIT_SOME_FAILED = 3  # ingest finished, but some files could not be ingested


def _user_errors() -> tuple[type[Exception], ...]:
    # Imported lazily: these modules are light, but keeping them out of `rag --help` costs nothing.
    from rag.loaders import LoadError
    from rag.models.packaged import ModelError
    from rag.storage.store import StoreError

    return (ConfigError, ModelError, StoreError, LoadError)


def handle_errors(fn: Callable) -> Callable:
    """User mistakes become one line on stderr and exit code 2; Ctrl-C ends quietly with 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        except _user_errors() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def store_option(fn: Callable) -> Callable:
    fn = click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="Store folder (env RAG_STORE; default ./vectorstore).")(fn)
    return fn


def model_options(fn: Callable) -> Callable:
    for opt in reversed([
        click.option("--k", type=click.IntRange(1, 100), default=None, help="Passages retrieved per question (default 4)."),
        click.option("--retrieval", type=click.Choice(["hybrid", "dense", "bm25"]), default=None,
                     help="hybrid: BM25 fused with dense vectors (default); or dense or bm25 alone."),
        click.option("--mmr", "mmr", flag_value=True, default=None,
                     help="Diversify the passages (maximal marginal relevance): near-duplicates do not crowd out the others."),
        click.option("--model", default=None, help="Chat model: qwen2.5-coder-1.5b (default), smollm2-135m, or a GGUF file path."),
        click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="Sampling temperature (default 0: most faithful, repeatable)."),
        click.option("--n-ctx", type=click.IntRange(256), default=None, help="Model context window in tokens (default 4096)."),
        click.option("--max-tokens", type=click.IntRange(1), default=None, help="Longest answer in tokens (default 512)."),
        click.option("--threads", "n_threads", type=click.IntRange(1), default=None, help="llama.cpp threads (default: physical cores)."),
        click.option("--batch-size", "n_batch", type=click.IntRange(1), default=None, help="Prompt tokens llama.cpp processes per step (default 512)."),
        click.option("--n-gpu-layers", type=click.IntRange(-1), default=None, help="Layers to offload to a GPU (needs a GPU build; -1: all)."),
        click.option("--force", "memory_check", flag_value=False, default=None,
                     help="Load the chat model even if it needs more memory than is available."),
    ]):
        fn = opt(fn)
    return fn


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Also say (on stderr) which retrieved passages were left out and why: below min_score, or over the context budget.")


def make_rag(ctx: click.Context, **flags: Any):
    from rag.api import RAG

    settings = Settings.load(config_file=ctx.obj.get("config"), overrides=flags)
    return RAG(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Settings file (default ./rag.toml, or env RAG_CONFIG).")
@click.version_option(package_name="rag", message="rag %(version)s")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Ask questions about your own documents, answered on this machine with cited sources.

    \b
      rag ingest ./docs            index a folder (PDF, Markdown, text)
      rag ask "your question"      answer with numbered citations (file, page)
      rag chat                     an interactive session with follow-up questions

    Settings come from defaults < rag.toml < RAG_* environment variables < flags.
    Nothing is downloaded and nothing leaves the machine.
    """
    privacy.apply()  # before any command imports chromadb, onnxruntime or huggingface_hub
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.option("--prune", is_flag=True, help="Also remove files that were ingested before but are gone from disk.")
@click.option("--password", default=None, help="Password for encrypted PDFs.")
@click.option("--ocr", type=click.Choice(["auto", "always", "never"]), default=None,
              help="OCR PDF pages: auto (default: pages without a usable text layer), always, never.")
@click.option("--chunk-size", type=click.IntRange(16), default=None, help="Chunk length in embedding tokens (default 200, at most 254).")
@click.option("--chunk-overlap", type=click.IntRange(0), default=None, help="Overlap between chunks in tokens (default 30).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
def ingest(ctx: click.Context, paths: tuple[Path, ...], store: Path | None, prune: bool, password: str | None,
           ocr: str | None, chunk_size: int | None, chunk_overlap: int | None, quiet: bool) -> None:
    """Index files and folders (recursively) into the store.

    Unchanged files are skipped, changed files are replaced, and a file that cannot be read is reported
    and skipped without stopping the run; it is not read again until it changes (or --password, --ocr or the
    chunk settings do). Exit code 0 when every file went in, 3 when some could not be read.
    """
    rag = make_rag(ctx, store=store, password=password, ocr=ocr, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    bar = _IngestProgress(enabled=not quiet)
    try:
        report = rag.ingest(*paths, prune=prune, progress=bar)
    finally:
        bar.close()
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in report.failed + report.still_failing:
        click.echo(f"failed: {line}", err=True)
    unchanged = f"{len(report.unchanged)} unchanged"
    if report.still_failing:
        unchanged += f" ({len(report.still_failing)} of them still failing)"
    parts = [f"{len(report.ingested)} ingested", unchanged, f"{len(report.skipped)} skipped", f"{len(report.failed)} failed"]
    if report.pruned:
        parts.append(f"{len(report.pruned)} pruned")
    rate = f" ({report.chunks / report.seconds:.1f} chunks/s)" if report.chunks and report.seconds else ""
    click.echo(f"{report.files} files: {', '.join(parts)}; {report.pages} pages, {report.chunks} chunks in "
               f"{report.seconds:.1f} s{rate}. Store: {rag.settings.store}")
    if report.failed or report.still_failing:
        sys.exit(EXIT_SOME_FAILED)


class _IngestProgress:
    """Turns ingest events into a click progress bar over chunks embedded (files shown as the label)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.files = 0
        self.done = 0

    def __call__(self, event: str, value: Any) -> None:
        if not self.enabled:
            return
        if event == "files":
            self.files = int(value)
            self.bar = click.progressbar(length=max(self.files, 1), label="ingesting", file=sys.stderr,
                                         show_pos=True, item_show_func=lambda s: s)
            self.bar.__enter__()
        elif event == "file" and self.bar is not None:
            self.bar.update(1, Path(str(value)).name[:40])
        elif event == "ocr" and self.bar is not None:
            path, done, total = value  # OCR takes seconds a page: show it page by page
            self.bar.current_item = f"{Path(str(path)).name[:30]}: OCR {done}/{total} pages"
            self.bar.render_progress()  # update(0) would not redraw

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _print_sources(answer: Any, show_context: bool) -> None:
    sources = answer.sources
    if answer.refused:
        sources = answer.context[:3]
        if sources:
            click.echo("\nNearest passages (not enough to answer):")
    elif sources:
        click.echo("\nSources:")
    for s in sources:
        click.echo(f"  [{s.number}] {s.label}  (score {s.score:.2f})")
        if show_context:
            click.echo("      " + s.text.replace("\n", "\n      "))
    if show_context and not answer.refused:
        unused = [s for s in answer.context if s not in sources]
        for s in unused:
            click.echo(f"  [{s.number}] {s.label}  (score {s.score:.2f}, not cited)")
            click.echo("      " + s.text.replace("\n", "\n      "))


def _print_dropped(answer: Any) -> None:
    from rag.answer.chain import display_label

    for d in answer.dropped:
        click.echo(f"dropped: {display_label(d['source'], d['page'])} (score {d['score']:.2f}): {d['reason']}", err=True)


def _answer(rag: Any, question: str, as_json: bool, show_context: bool, session: Any = None, verbose: bool = False) -> Any:
    """Stream the answer to stdout, then its sources; returns the finished `Answer`."""
    streamer = session.stream(question) if session is not None else rag.stream(question)
    if as_json:
        *_, answer = streamer
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
        if verbose:
            _print_dropped(answer)
        return answer
    answer = None
    try:
        for item in streamer:
            if isinstance(item, str):
                click.echo(item, nl=False)
            else:
                answer = item
    finally:
        streamer.close()  # on Ctrl-C: stop generating now and release the model for the next question
    click.echo()
    if answer is not None:
        _print_sources(answer, show_context)
        if verbose:
            _print_dropped(answer)
    return answer


@main.command()
@click.argument("question")
@store_option
@model_options
@click.option("--source", "source_glob", default=None, help="Only search files whose path or name matches this glob.")
@click.option("--show-context", is_flag=True, help="Also print the passages given to the model.")
@verbose_option
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object {"answer": str, "sources": [{"source", "page", "text", "score"}]}.')
@click.pass_context
@handle_errors
def ask(ctx: click.Context, question: str, store: Path | None, source_glob: str | None, show_context: bool,
        verbose: bool, as_json: bool, **flags: Any) -> None:
    """Answer QUESTION from the ingested documents, streaming, with numbered sources (file, page).

    When the documents do not hold the answer, it says so instead of guessing.
    """
    rag = make_rag(ctx, store=store, **flags)
    _check_store(rag)
    for line in rag.model_warnings:
        click.echo(f"warning: {line}", err=True)
    if source_glob:
        rag.retriever.source_glob = source_glob
    _answer(rag, question, as_json, show_context, verbose=verbose)


@main.command()
@store_option
@model_options
@click.option("--show-context", is_flag=True, help="Also print the passages given to the model.")
@verbose_option
@click.pass_context
@handle_errors
def chat(ctx: click.Context, store: Path | None, show_context: bool, verbose: bool, **flags: Any) -> None:
    """Talk with your documents: an interactive session where follow-up questions keep their context.

    Type a question and press Enter. /sources shows the passages behind the last answer, /reset forgets the
    conversation, /exit (or /quit, Ctrl-D) ends the session. Ctrl-C while an answer streams stops that answer,
    not the session.
    """
    rag = make_rag(ctx, store=store, **flags)
    _check_store(rag)
    for line in rag.model_warnings:
        click.echo(f"warning: {line}", err=True)
    session = rag.chat()
    click.echo("Ask about your documents (/sources: passages of the last answer, /reset: forget the conversation, "
               "/exit: end; Ctrl-C stops an answer).", err=True)
    last = None
    while True:
        try:
            question = click.prompt("\n>", prompt_suffix=" ", default="", show_default=False, err=True).strip()
        except (EOFError, click.exceptions.Abort):
            click.echo("", err=True)
            return
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return
        if question == "/reset":
            session.history.clear()
            last = None
            click.echo("(conversation forgotten)", err=True)
            continue
        if question == "/sources":
            if last is None:
                click.echo("(no answer yet)", err=True)
            else:
                _print_sources(last, show_context=True)
            continue
        if question.startswith("/"):
            click.echo(f"(unknown command {question.split()[0]}: /sources, /reset, /exit)", err=True)
            continue
        try:
            last = _answer(rag, question, False, show_context, session=session, verbose=verbose) or last
        except KeyboardInterrupt:
            click.echo("\n(stopped)", err=True)


@main.command(name="list")
@store_option
@click.pass_context
@handle_errors
def list_(ctx: click.Context, store: Path | None) -> None:
    """List the ingested files with their pages, chunks and ingest time."""
    rag = make_rag(ctx, store=store)
    files = rag.files()
    if not files:
        click.echo(f"(no files in {rag.settings.store})")
    for rec in files:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.ingested_at))
        flag = "" if rec.status == "done" else f"  [{rec.status}]"
        click.echo(f"{rec.pages:5d} pages {rec.chunks:6d} chunks  {when}  {rec.source}{flag}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.pass_context
@handle_errors
def delete(ctx: click.Context, paths: tuple[Path, ...], store: Path | None) -> None:
    """Remove ingested files (their chunks and manifest entries) from the store; the files stay on disk."""
    rag = make_rag(ctx, store=store)
    missing = False
    for path in paths:
        n = rag.delete(path)
        if n:
            click.echo(f"deleted {path} ({n} chunks)")
        else:
            click.echo(f"{path}: not in the store", err=True)
            missing = True
    if missing:
        sys.exit(EXIT_USER_ERROR)


@main.command()
@store_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@handle_errors
def reset(ctx: click.Context, store: Path | None, yes: bool) -> None:
    """Empty the store: every chunk and manifest entry goes (your files stay on disk)."""
    rag = make_rag(ctx, store=store)
    if not yes:
        click.confirm(f"Remove all {len(rag.files())} files from {rag.settings.store}?", abort=True, err=True)
    rag.reset()
    click.echo(f"{rag.settings.store}: emptied")


@main.command()
@store_option
@click.pass_context
@handle_errors
def stats(ctx: click.Context, store: Path | None) -> None:
    """Files, pages, chunks and disk use of the store."""
    rag = make_rag(ctx, store=store)
    files = rag.files()
    size = sum(p.stat().st_size for p in Path(rag.settings.store).rglob("*") if p.is_file())
    click.echo(f"store: {rag.settings.store}\nfiles: {len(files)}\npages: {sum(f.pages for f in files)}\n"
               f"chunks: {rag.store.count()}\nembedding model: {rag.settings.embedding_model}\n"
               f"disk: {size / 1e6:.1f} MB")
    pending = [f.source for f in files if f.status != "done"]
    if pending:
        click.echo(f"interrupted: {len(pending)} file(s) half-replaced; `rag ingest` completes them")


@main.command()
@store_option
@click.pass_context
@handle_errors
def doctor(ctx: click.Context, store: Path | None) -> None:
    """Check the installation: llama.cpp build (CPU features, GPU), models, store health, privacy switches.

    Exit code 0 when nothing failed, 1 otherwise; each problem comes with a one-line fix.
    """
    from rag import doctor as doc

    settings = Settings.load(config_file=ctx.obj.get("config"), overrides={"store": store})
    failed = False
    for check in doc.run(settings):
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
        click.echo(f"[{mark}] {check.name}: {check.detail}")
        if check.fix:
            click.echo(f"       fix: {check.fix}")
        failed |= check.status == "fail"
    sys.exit(1 if failed else 0)


@main.command(name="config")
@click.pass_context
@handle_errors
def config_(ctx: click.Context) -> None:
    """Print every setting with its current value and what it does."""
    settings = Settings.load(config_file=ctx.obj.get("config"))
    for name, value, description in settings.describe():
        click.echo(f"{name} = {value!r}\n    {description}  (env RAG_{name.upper()})")


def _check_store(rag: Any) -> None:
    if rag.store.count() == 0:
        raise ConfigError(f"{rag.settings.store}: the store is empty; run `rag ingest PATH` first")


def _register_groups() -> None:
    # Both modules import only click at the top, so `rag --help` stays fast.
    from rag.cli.eval import eval_group
    from rag.cli.models import models_group

    main.add_command(eval_group, name="eval")
    main.add_command(models_group, name="models")
    from rag.cli.serve import serve_command
    main.add_command(serve_command(), name="serve")


_register_groups()

if __name__ == "__main__":  # pragma: no cover
    main()
