"""Loading: turn one file into LangChain `Document`s with metadata, by its suffix (text, HTML, .docx, PDF with
OCR for scanned pages); anything that cannot be read is a single `LoadError` (path + one-line reason)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rag.loaders.common import Loaded, LoadError, as_load_error
from rag.loaders.html import load_html
from rag.loaders.office import load_docx
from rag.loaders.pdf import load_pdf
from rag.loaders.quality import looks_like_garbage, repair_cjk_spaces
from rag.loaders.text import load_text, read_text_file

__all__ = [
    "OCR_MODES", "SUPPORTED_SUFFIXES", "LoadError", "Loaded", "load_file", "looks_like_garbage",
    "read_text_file", "repair_cjk_spaces",
]  # fmt: skip

_LOADERS: dict[str, Callable[[Path | str, str | None], Loaded]] = {
    ".pdf": load_pdf,
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".docx": load_docx,
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)

OCR_MODES = ("auto", "always", "never")


def load_file(path: Path | str, *, password: str | None = None, ocr: str = "auto",
              ocr_progress: Callable[[int, int], None] | None = None, pdf_tables: bool = True) -> Loaded:
    """Load one file by suffix; raise `LoadError` (never anything else) if it cannot be read.

    `ocr` (PDF only): "auto" reads pages whose text layer is missing or garbage by OCR, "always" every page,
    "never" none (those pages are then reported in a warning). `ocr_progress(done, total)` is called after
    each OCR'd page (OCR takes seconds a page). `pdf_tables` (PDF only): ruled tables become Markdown tables
    (pdfplumber, on pages that draw lines); False reads every page as plain text."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise LoadError(path, f"unsupported file type {suffix}" if suffix else "unsupported file type (no suffix)")
    if ocr not in OCR_MODES:
        raise ValueError(f"ocr must be one of {OCR_MODES}")
    with as_load_error(path):
        if suffix == ".pdf":
            return load_pdf(path, password, ocr, ocr_progress, pdf_tables)
        return _LOADERS[suffix](path, password)
