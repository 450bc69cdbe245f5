"""`rag watch DIR...`: keep the store in sync with folders until Ctrl-C, one line per batch of changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rag.cli.common import IngestProgress, handle_errors, make_rag, ocr_option, pdf_tables_option, store_option, warn


class BatchProgress:
    """A batch's progress: the usual bar on a terminal; elsewhere (a log, a pipe) a line at each tenth of a batch
    of 100 files or more, so that a burst shows it is moving."""

    def __init__(self, quiet: bool) -> None:
        self.bar = IngestProgress(enabled=not quiet)
        self.lines = not quiet and not self.bar.enabled
        self.total = self.done = self.shown = 0

    def __call__(self, event: str, value: Any) -> None:
        self.bar(event, value)
        if event == "files":
            self.total = int(value)  # type: ignore[arg-type]
        elif event == "file" and self.lines and self.total >= 100:
            self.done += 1
            if self.done * 10 // self.total > self.shown:
                self.shown = self.done * 10 // self.total
                click.echo(f"  {self.done}/{self.total} files")

    def close(self) -> None:
        self.bar.close()


def summary(report: Any) -> str:
    """One line per batch (the tests and benchmarks read it): counts by outcome and chunks embedded."""
    ingest = report.ingest
    return (f"{report.files} files in {report.seconds:.1f} s: {len(ingest.ingested)} ingested, "
            f"{len(ingest.unchanged)} unchanged, {len(report.relabelled)} relabelled, "
            f"{len(report.deleted) + len(ingest.pruned)} deleted, {len(ingest.failed)} failed; "
            f"{ingest.chunks} chunks embedded")


@click.command()
@click.argument("folders", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path))
@store_option
@click.option("--debounce", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              help="Seconds a changed file must keep its size and mtime before it is read; changes that come "
                   "while others settle join their batch.")
@click.option("--password", default=None, help="Password for encrypted PDFs.")
@ocr_option
@pdf_tables_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines (the line per batch stays).")
@click.pass_context
@handle_errors
def watch(ctx: click.Context, folders: tuple[Path, ...], store: Path | None, debounce: float, password: str | None,
          ocr: str | None, pdf_tables: bool | None, quiet: bool) -> None:
    """Keep the store in sync with folders until Ctrl-C.

    First syncs the folders whole (as `rag ingest` does, and deleting what is gone from them), then follows
    their changes: a file is read once its size and mtime held still for --debounce seconds; new and changed
    files are ingested, deleted ones removed, and a renamed or moved file keeps its chunks under the new name
    without being embedded again. Hidden files and editors' temporary and lock files (.swp, name~, .#name,
    .~lock.name#, ~$name, 4913, .tmp, .part, .crdownload) are ignored. One line per batch; a background
    server answers from the new content on its next question. Ctrl-C exits with 130; the store stays
    consistent even if the process is killed (the next run completes a half-written file).
    """
    rag = make_rag(ctx, store=store, password=password, ocr=ocr, pdf_tables=pdf_tables)
    watcher = rag.watcher(*folders, debounce=debounce)
    current: list[BatchProgress] = []

    def on_start(paths: list[str]) -> BatchProgress:
        current.append(BatchProgress(quiet))
        return current[-1]

    def on_batch(report: Any, first: bool) -> None:
        current.pop().close()
        warn(report.ingest.warnings)
        for line in report.ingest.failed + report.ingest.still_failing:
            click.echo(f"failed: {line}", err=True)
        if first:
            click.echo(f"watching {', '.join(map(str, folders))} (store {rag.settings.store}); Ctrl-C stops")
        click.echo(("synced " if first else "batch: ") + summary(report))
        sys.stdout.flush()

    watcher.run(on_batch, on_start=on_start)


COMMANDS = {"watch": watch}
