"""The store's documents from the command line: `rag ingest`, `list`, `delete`, `reset` and `stats`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from rag.cli.common import (EXIT_SOME_FAILED, EXIT_USER_ERROR, IngestProgress, handle_errors, make_rag, ocr_option,
                            pdf_tables_option, process_seconds, store_option, warn)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.option("--prune", is_flag=True, help="Also remove files that were ingested before but are gone from disk.")
@click.option("--password", default=None, help="Password for encrypted PDFs.")
@ocr_option
@pdf_tables_option
@click.option("--chunk-size", type=click.IntRange(16), default=None, help="Chunk length in embedding tokens (default 200, at most 254).")
@click.option("--chunk-overlap", type=click.IntRange(0), default=None, help="Overlap between chunks in tokens (default 30).")
@click.option("--ray", "ray_address", metavar="ADDRESS", default=None,
              help="Read and embed on a Ray cluster: its head's host:port, or 'auto' for the cluster this machine "
                   "belongs to (env RAG_RAY_ADDRESS; needs pip install 'rag[ray]'). The store is written from here.")
@click.option("--embedding-model", default=None,
              help="Embedding model of a new store: auto (default: multilingual-e5-small when the files hold Chinese "
                   "text, else all-MiniLM-L6-v2), all-MiniLM-L6-v2, multilingual-e5-small, or a sentence-transformers "
                   "folder. A store keeps the model it was built with (another needs rag reset first).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
def ingest(ctx: click.Context, paths: tuple[Path, ...], store: Path | None, prune: bool, password: str | None,
           ocr: str | None, pdf_tables: bool | None, chunk_size: int | None, chunk_overlap: int | None,
           ray_address: str | None, embedding_model: str | None, quiet: bool) -> None:
    """Index files and folders (recursively) into the store.

    Unchanged files are skipped, changed files are replaced, and a file that cannot be read is reported
    and skipped without stopping the run; it is not read again until it changes (or --password, --ocr,
    --pdf-tables or the chunk settings do). Exit code 0 when every file went in, 3 when some could not be read.
    """
    rag = make_rag(ctx, store=store, password=password, ocr=ocr, pdf_tables=pdf_tables, chunk_size=chunk_size,
                   chunk_overlap=chunk_overlap, ray_address=ray_address, embedding_model=embedding_model)
    bar = IngestProgress(enabled=not quiet)
    try:
        report = rag.ingest(*paths, prune=prune, progress=bar)
    finally:
        bar.close()
    warn(report.warnings)
    for line in report.failed + report.still_failing:
        click.echo(f"failed: {line}", err=True)
    click.echo(f"{_summary(report, process_seconds())} Store: {rag.settings.store}")
    if report.failed or report.still_failing:
        sys.exit(EXIT_SOME_FAILED)


def _summary(report: Any, seconds: float) -> str:
    """One line: files by outcome, pages, chunks, time and rate. `seconds` is the wall time of the whole command,
    from the process's start (start-up and imports included), not only the ingest's own."""
    unchanged = f"{len(report.unchanged)} unchanged"
    if report.still_failing:
        unchanged += f" ({len(report.still_failing)} of them still failing)"
    parts = [f"{len(report.ingested)} ingested", unchanged, f"{len(report.skipped)} skipped", f"{len(report.failed)} failed"]
    if report.pruned:
        parts.append(f"{len(report.pruned)} pruned")
    rate = f" ({report.chunks / seconds:.1f} chunks/s)" if report.chunks and seconds else ""
    return (f"{report.files} files: {', '.join(parts)}; {report.pages} pages, {report.chunks} chunks in "
            f"{seconds:.1f} s{rate}.")


@click.command(name="list")
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


@click.command()
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


@click.command()
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


@click.command()
@store_option
@click.pass_context
@handle_errors
def stats(ctx: click.Context, store: Path | None) -> None:
    """Files, pages, chunks and disk use of the store."""
    rag = make_rag(ctx, store=store)
    files = rag.files()
    size = sum(p.stat().st_size for p in Path(rag.settings.store).rglob("*") if p.is_file())
    click.echo(f"store: {rag.settings.store}\nfiles: {len(files)}\npages: {sum(f.pages for f in files)}\n"
               f"chunks: {rag.store.count()}\nembedding model: {rag.embedding_model}\n"
               f"disk: {size / 1e6:.1f} MB")
    pending = [f.source for f in files if f.status != "done"]
    if pending:
        click.echo(f"interrupted: {len(pending)} file(s) half-replaced; `rag ingest` completes them")


COMMANDS = {"ingest": ingest, "list": list_, "delete": delete, "reset": reset, "stats": stats}
