"""What every loader shares: the `LoadError` and `Loaded` results, one-line reasons, safe file reads and
the metadata a document carries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

MAX_REASON = 200


class LoadError(Exception):
    """A file that cannot be read at all; `str(e)` is "<path>: <reason>" on one line."""

    def __init__(self, path: Path | str, reason: str):
        reason = one_line(reason) or "unknown error"
        # Both go to Exception.__init__ so the error survives pickling (multiprocessing ingest).
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Loaded:
    """What one file produced: its documents, its page count and human-readable warnings."""

    documents: list[Document]
    pages: int
    warnings: list[str] = field(default_factory=list)


def single_document(source: str, text: str, *, title: str | None = None, empty: str,
                    warnings: list[str] | None = None) -> Loaded:
    """A one-page file's result: its text as one document, or the `empty` warning when it has none."""
    if not text:
        return Loaded(documents=[], pages=1, warnings=[f"{source}: {empty}"])
    document = Document(page_content=text, metadata=metadata(source, title=title))
    return Loaded(documents=[document], pages=1, warnings=warnings or [])


def one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    message = one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextlib.contextmanager
def as_load_error(path: Path | str) -> Iterator[None]:
    """Let LoadError through; turn anything else a loader raises into a one-line LoadError."""
    try:
        yield
    except LoadError:
        raise
    except Exception as exc:  # the contract is "LoadError or nothing", whatever the library does
        raise LoadError(path, describe(exc)) from exc


def read_bytes(path: Path | str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise LoadError(path, "file not found") from None
    except IsADirectoryError:
        raise LoadError(path, "is a directory, not a file") from None
    except PermissionError:
        raise LoadError(path, "permission denied") from None
    except OSError as exc:
        raise LoadError(path, f"cannot read file ({exc.strerror or describe(exc)})") from None


def check_readable(path: Path | str) -> None:
    # Libraries that take a path (pypdf, python-docx) give odd messages for these cases.
    p = Path(path)
    if not p.exists():
        raise LoadError(path, "file not found")
    if p.is_dir():
        raise LoadError(path, "is a directory, not a file")


def normalise(text: str) -> str:
    """Newlines become \\n; NULs and a leading BOM are dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")


def metadata(source: str, *, page: int | None = None, title: str | None = None) -> dict[str, Any]:
    # Chroma metadata cannot hold None, so absent values are left out rather than stored as None.
    meta: dict[str, Any] = {"source": source}
    if page is not None:
        meta["page"] = page
    if title:
        meta["title"] = title
    return meta


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def page_list(pages: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(p) for p in pages[:limit])
    return shown + (f", … (+{len(pages) - limit} more)" if len(pages) > limit else "")
