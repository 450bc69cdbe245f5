"""Reading PDFs with pypdf, a document per page: open (decrypting with the password), read each page's text
layer (ruled tables as Markdown, pdf_tables.py), send the pages whose layer is missing or junk to OCR (ocr.py),
and report what stayed unread."""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag.loaders import ocr
from rag.loaders.pdf_tables import TableFinder, may_hold_table, text_with_tables
from rag.loaders.common import (
    LoadError, Loaded, check_readable, describe, metadata, normalise, one_line, page_list, plural,
)  # fmt: skip
from rag.loaders.quality import looks_like_garbage, repair_cjk_spaces

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})  # fmt: skip

Progress = Callable[[int, int], None]


@dataclass
class _Pages:
    """One PDF's pages as reading goes on: the documents read so far, and the pages still without text, by why."""

    source: str
    count: int
    title: str | None
    documents: list[Document] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)  # no text layer (or every page, for ocr="always")
    garbage: list[int] = field(default_factory=list)  # a text layer, but junk
    failed: list[int] = field(default_factory=list)  # pypdf raised
    first_failure: str = ""
    warnings: list[str] = field(default_factory=list)
    ocr_note: str = "OCR is not done"  # why the unread pages stayed unread

    def add(self, number: int, text: str, **extra: Any) -> None:
        meta = {**metadata(self.source, page=number, title=self.title), **extra}
        self.documents.append(Document(page_content=text, metadata=meta))

    def unread(self) -> list[int]:
        return sorted(self.empty + self.garbage + self.failed)

    def mark_read(self, done: set[int]) -> None:
        self.empty = [n for n in self.empty if n not in done]
        self.garbage = [n for n in self.garbage if n not in done]
        self.failed = [n for n in self.failed if n not in done]


def load_pdf(path: Path | str, password: str | None, ocr_mode: str = "auto",
             ocr_progress: Progress | None = None, tables: bool = True) -> Loaded:
    """The PDF's pages as documents; `ocr_mode`, `ocr_progress` and `tables` as in `rag.loaders.load_file`."""
    check_readable(path)
    if ocr_mode == "always" and not ocr.available():
        # Every page goes to OCR in this mode: without it the file would silently give nothing.
        raise LoadError(path, "--ocr always needs OCR, which is not installed: pip install 'rag[ocr]'")
    with _quiet_pypdf():
        reader = _open(path, password)
        count = _page_count(reader, path)
        if count == 0:
            return Loaded(documents=[], pages=0, warnings=[f"{path}: PDF has no pages, nothing ingested"])
        pages = _Pages(source=str(path), count=count, title=_pdf_title(reader))
        finder = TableFinder(path, password if reader.is_encrypted else None) if tables else None
        try:
            _read_text_layer(reader, pages, ocr_mode, finder)
        finally:
            if finder is not None:
                finder.close()
        if ocr_mode != "never" and pages.unread():
            _read_by_ocr(path, password if reader.is_encrypted else None, pages, ocr_progress)
        if ocr_mode == "always":
            pages.empty = []  # every page was filed here for OCR; the ones it left unread get no warning
        return Loaded(documents=pages.documents, pages=count, warnings=pages.warnings + _unread_warnings(pages))


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's logging and warnings for the duration of one load, then restore them."""
    logger = logging.getLogger("pypdf")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(previous)


def _open(path: Path | str, password: str | None) -> Any:
    """A pypdf reader, decrypted if the file is encrypted."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(str(path), strict=False)
    except Exception as exc:  # EmptyFileError, PdfReadError, PdfStreamError, ...
        raise LoadError(path, f"not a readable PDF ({_describe_pdf_error(exc)})") from exc
    if not reader.is_encrypted:
        return reader
    # "" opens files that only have an owner (permissions) password.
    candidates = [password, ""] if password else [""]
    try:
        opened = any(reader.decrypt(candidate) for candidate in candidates)
    except DependencyError as exc:
        raise LoadError(path, "encrypted PDF needs the 'cryptography' package (pip install 'pypdf[crypto]')") from exc
    except Exception as exc:
        raise LoadError(path, f"encrypted PDF could not be decrypted ({describe(exc)})") from exc
    if not opened:
        raise LoadError(path, "encrypted PDF: wrong or missing password (use --password)")
    return reader


def _page_count(reader: Any, path: Path | str) -> int:
    try:
        return len(reader.pages)
    except Exception as exc:
        raise LoadError(path, f"not a readable PDF ({_describe_pdf_error(exc)})") from exc


def _clean(text: str) -> str:
    return repair_cjk_spaces(normalise(text)).strip()


def _read_text_layer(reader: Any, pages: _Pages, ocr_mode: str, finder: TableFinder | None) -> None:
    """Each page's text layer becomes a document, or the page is filed as empty, garbage or failed."""
    for number in range(1, pages.count + 1):
        try:
            raw = reader.pages[number - 1].extract_text() or ""
            if finder is not None and raw.strip() and ocr_mode != "always":
                raw = _with_tables(reader.pages[number - 1], number, raw, finder)
        except Exception as exc:
            pages.failed.append(number)
            pages.first_failure = pages.first_failure or describe(exc)
            continue
        text = _clean(raw.translate(_LIGATURES))
        if ocr_mode == "always" or not text:
            pages.empty.append(number)
        elif looks_like_garbage(text):
            pages.garbage.append(number)
        else:
            pages.add(number, text)


def _with_tables(page: Any, number: int, raw: str, finder: TableFinder) -> str:
    """The page's text with its ruled tables as Markdown; its plain text if it has none or pdfplumber fails."""
    if not may_hold_table(page):
        return raw
    try:
        found = finder.tables(number)
        return text_with_tables(page, found) if found else raw
    except Exception:  # table finding is a bonus: a page pdfplumber cannot read keeps pypdf's text
        return raw


def _read_by_ocr(path: Path | str, password: str | None, pages: _Pages, progress: Progress | None) -> None:
    """OCR the unread pages, adding what it reads (marked "ocr") in page order."""
    if not ocr.available():
        pages.ocr_note = "OCR is not installed: pip install 'rag[ocr]'"
        return
    to_read = pages.unread()
    counted = itertools.count(1)
    on_page = (lambda _number: progress(next(counted), len(to_read))) if progress else None
    if progress:
        progress(0, len(to_read))  # OCR starts: the first page alone may take seconds
    result = ocr.ocr_pdf_pages(path, to_read, password=password, progress=on_page)
    pages.warnings.extend(result.warnings)
    for number, raw in result.pages.items():
        text = _clean(raw)
        if text and not looks_like_garbage(text):
            pages.add(number, text, ocr=True)
    pages.documents.sort(key=lambda d: d.metadata["page"])
    done = set(result.pages)
    if done:
        read = f"{plural(len(done), 'page')} read by OCR (pages {page_list(sorted(done))})"
        pages.warnings.append(f"{pages.source}: {read}")
    pages.mark_read(done)
    pages.ocr_note = "OCR found no text"


def _unread_warnings(pages: _Pages) -> list[str]:
    """One warning per reason some pages gave no text."""
    source, count, note = pages.source, pages.count, pages.ocr_note
    warns = []
    if pages.failed:
        warns.append(
            f"{source}: text extraction failed on {plural(len(pages.failed), 'page')} of {count} "
            f"(pages {page_list(pages.failed)}; {one_line(pages.first_failure, 120)}); skipped"
        )
    if pages.garbage:
        rest = f", nothing ingested; {note}" if not pages.documents else ""
        warns.append(
            f"{source}: unreadable text layer (font without Unicode map or bad OCR) on "
            f"{plural(len(pages.garbage), 'page')} of {count} (pages {page_list(pages.garbage)}); dropped{rest}"
        )
    if pages.empty and len(pages.empty) == count:
        warns.append(
            f"{source}: no text layer on any of {plural(count, 'page')} (scanned or vector-only PDF); "
            f"{note}, nothing ingested"
        )
    elif pages.empty:
        warns.append(
            f"{source}: {plural(len(pages.empty), 'page')} of {count} had no text (pages {page_list(pages.empty)}; "
            f"blank, scanned or vector-only; {note})"
        )
    return warns


def _describe_pdf_error(exc: BaseException) -> str:
    # pypdf's own messages ("startxref not found", "Cannot read an empty file") are already clear.
    message = one_line(str(exc), 150)
    return message or type(exc).__name__


def _pdf_title(reader: Any) -> str | None:
    try:
        info = reader.metadata
        title = info.title if info else None
    except Exception:  # broken /Info dictionaries are common and not worth failing the file for
        return None
    if not title:
        return None
    title = " ".join(str(title).replace("\x00", "").split())
    return title or None
