"""Which embedding model a new store takes with `embedding_model = "auto"` (once it holds files, the one it records:
`rag.storage.store.recorded_model`): MiniLM unless the files of its first ingest hold Chinese text, then
multilingual-e5-small (MiniLM reads Chinese as unknown word pieces: benchmarks/notes/embedder-choice.md)."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

from rag.embeddings.identity import E5, MINILM
from rag.ingest.discover import discover
from rag.lang import language_of

# Text read per file to tell its language: a PDF's text layer on a few pages spread through it, no OCR.
SAMPLE_CHARS = 20_000
SAMPLE_PAGES = 6


def for_new_store(paths: Iterable[Path | str], password: str | None = None) -> str:
    """multilingual-e5-small when any of the files (folders searched as `rag ingest` does) holds mostly Chinese
    text, else MiniLM."""
    return E5 if first_chinese(paths, password) else MINILM


def first_chinese(paths: Iterable[Path | str], password: str | None = None) -> Path | None:
    """The first of the files (folders searched as `rag ingest` does) that holds mostly Chinese text, or None."""
    files, _errors = discover(list(paths))
    return next((f for f in files if language_of(sample_text(f, password)) == "zh"), None)


def sample_text(path: Path, password: str | None = None) -> str:
    """Up to SAMPLE_CHARS of the file's text: a PDF's text layer on SAMPLE_PAGES pages spread through it (reading
    every page twice would double a first ingest's parse), any other regular file as the loaders read it; "" when it
    cannot be read (the ingest reports that)."""
    from rag.loaders import LoadError, load_file

    try:
        # A FIFO or a device blocks or never ends: only the ingest's own reader processes may open those.
        if not stat.S_ISREG(path.stat().st_mode):
            return ""
        if path.suffix.lower() == ".pdf":
            return _pdf_sample(path, password)
        loaded = load_file(path, password=password, ocr="never")
    except (LoadError, OSError, ValueError):
        return ""
    return "\n".join(d.page_content for d in loaded.documents)[:SAMPLE_CHARS]


def _pdf_sample(path: Path, password: str | None) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(str(path), password=password)
        n = len(reader.pages)
        picks = sorted({round(i * (n - 1) / max(SAMPLE_PAGES - 1, 1)) for i in range(SAMPLE_PAGES)}) if n else []
        return "\n".join(reader.pages[i].extract_text() or "" for i in picks)[:SAMPLE_CHARS]
    except (PyPdfError, OSError, ValueError, KeyError, TypeError):
        return ""
