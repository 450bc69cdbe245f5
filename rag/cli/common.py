"""What every `rag` command shares: the one error wrapper and exit codes, the shared options, and the
`Settings`/`RAG` built from the flags. Imports only click at the top, so `rag --help` stays fast."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# Exit codes (documented in the README).
EXIT_USER_ERROR = 2  # bad flag, config, model or store: nothing was done
EXIT_SOME_FAILED = 3  # ingest finished, but some files could not be ingested
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports SIGINT

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Each stage's error type (module, name): a user mistake or a bad file, never a bug in rag.
USER_ERRORS = (("rag.config", "ConfigError"), ("rag.models.packaged", "ModelError"), ("rag.storage.store", "StoreError"),
               ("rag.loaders", "LoadError"), ("rag.embeddings", "EmbeddingError"))


def user_errors() -> tuple[type[Exception], ...]:
    """The user-error types of the stages loaded so far."""
    found = []
    for module, name in USER_ERRORS:
        # A stage that was never imported raised nothing; importing it now (rag.embeddings loads LangChain) would
        # only slow the error message down.
        if ".".join(module.split(".")[:2]) in sys.modules:
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def handle_errors(fn: Callable) -> Callable:
    """User mistakes become one line on stderr and exit code 2; Ctrl-C ends quietly with 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except user_errors() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def process_seconds() -> float:
    """Wall-clock seconds since this process started (Linux: its start time in /proc/self/stat, so interpreter
    start-up and imports count), or since this module was imported where that cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        age = -1.0
    since_import = time.monotonic() - _IMPORTED
    return age if since_import <= age < since_import + 3600 else since_import  # a clock that disagrees: not used


_IMPORTED = time.monotonic()


def settings(ctx: click.Context, **overrides: Any):
    """Settings as `rag` builds them: defaults < rag.toml (or --config) < RAG_* < these flags."""
    from rag.config import Settings

    config = ctx.obj.get("config") if isinstance(ctx.obj, dict) else None
    return Settings.load(config_file=config, overrides=overrides)


def make_rag(ctx: click.Context, **overrides: Any):
    """A `RAG` over `settings(ctx, **overrides)`; its heavy parts load when first used."""
    from rag.api import RAG

    return RAG(settings(ctx, **overrides))


def warn(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"warning: {line}", err=True)


def store_option(fn: Callable) -> Callable:
    return click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Store folder (env RAG_STORE; default ./vectorstore).")(fn)


_MODEL_OPTIONS = [
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
]


def model_options(fn: Callable) -> Callable:
    """Retrieval and chat-model flags (ask, chat, serve); each maps to the setting of the same meaning."""
    for opt in reversed(_MODEL_OPTIONS):
        fn = opt(fn)
    return fn


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Also say (on stderr) which retrieved passages were left out and why: below min_score, or over the context budget.")
show_context_option = click.option("--show-context", is_flag=True, help="Also print the passages given to the model.")


class IngestProgress:
    """Turns ingest events into a click progress bar on stderr over the files (the current one as the label)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None

    def __call__(self, event: str, value: Any) -> None:
        if not self.enabled:
            return
        if event == "files":
            self.bar = click.progressbar(length=max(int(value), 1), label="ingesting", file=sys.stderr,
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


# How files are read, for the commands that read them (rag ingest, rag watch).
ocr_option = click.option("--ocr", type=click.Choice(["auto", "always", "never"]), default=None,
                          help="OCR PDF pages: auto (default: pages without a usable text layer), always, never.")
pdf_tables_option = click.option(
    "--pdf-tables/--no-pdf-tables", default=None,
    help="Ruled PDF tables as Markdown tables (default on; PDF pages with drawings then take 1.7-2.2x as long to "
         "read; off reads plain text). A change re-reads the files.")
