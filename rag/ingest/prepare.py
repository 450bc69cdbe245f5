"""One file's way from disk to chunks: settle it from its stat and manifest record, or hash, load and split it
into the `Item` the pipeline embeds and commits. Touches no store, so it runs in a reader process or thread."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rag.loaders import LoadError, load_file
from rag.storage.store import FileRecord

if TYPE_CHECKING:
    from rag.splitting import Splitter


@dataclass
class Item:
    """One file on its way through the pipeline: what was found, and for "chunks" what is to be stored."""

    path: Path
    kind: str  # "unchanged", "touch" (same content, new mtime), "failed", "still_failing", "empty" or "chunks"
    message: str = ""
    old: FileRecord | None = None
    record: FileRecord | None = None
    warnings: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metadatas: list[dict] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)

    @property
    def source(self) -> str:
        return str(self.path)

    @property
    def missing(self) -> int:
        """Chunks still waiting for their vectors."""
        return len(self.texts) - len(self.vectors)


class Preparer:
    """Hash, load and split one file, under the settings (fingerprints, load options) of one ingest."""

    def __init__(self, splitter: Splitter | None, load_options: dict, fingerprint: str, empty_fingerprint: str) -> None:
        self.splitter = splitter  # None until a file needs splitting (`quick` needs none)
        self.load_options = load_options
        self.fingerprint = fingerprint
        self.empty_fingerprint = empty_fingerprint
        self.on_ocr_page: Callable[[str, int, int], None] | None = None  # (path, done, total)

    def current(self, old: FileRecord | None) -> bool:
        """Whether a manifest record was made by these settings (and is complete)."""
        if old is None or old.status != "done":
            return False
        return old.fingerprint == (self.empty_fingerprint if old.chunks == 0 else self.fingerprint)

    def quick(self, path: Path, old: FileRecord | None) -> Item | os.stat_result:
        """Settle a file from its stat and manifest record alone, or return its stat for `prepare`."""
        try:
            st = path.stat()
        except OSError as exc:
            return Item(path, "failed", message=f"{path}: cannot read ({exc.strerror})", old=old)
        if self.current(old) and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            return Item(path, "unchanged", old=old)  # unchanged by size and mtime: not even read
        return st

    def prepare(self, path: Path, old: FileRecord | None, st: os.stat_result) -> Item:
        source = str(path)
        try:
            digest = file_sha256(path)
        except OSError as exc:
            return Item(path, "failed", message=f"{source}: cannot read ({exc.strerror})", old=old)
        if self.current(old) and old.sha256 == digest:
            return Item(path, "touch", old=old, record=FileRecord(**{**old.__dict__, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        try:
            report = self.on_ocr_page
            on_page = (lambda done, total: report(source, done, total)) if report else None
            loaded = load_file(path, **self.load_options, ocr_progress=on_page)
            chunks = self.splitter.split(loaded.documents)
        except LoadError as exc:
            return Item(path, "failed", message=str(exc), old=old)
        except Exception as exc:  # a bug or a library's surprise on one file must not stop the whole run
            return Item(path, "failed", message=f"{source}: cannot be read ({one_line(exc)})", old=old)
        fingerprint = self.fingerprint if chunks else self.empty_fingerprint
        rec = FileRecord(source, st.st_size, st.st_mtime_ns, digest, loaded.pages, len(chunks), fingerprint, "done",
                         time.time(), [])
        return Item(path, "chunks" if chunks else "empty", old=old, record=rec, warnings=list(loaded.warnings),
                    texts=[c.page_content for c in chunks], metadatas=[chroma_metadata(c.metadata) for c in chunks])


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def chroma_metadata(meta: dict) -> dict:
    # Chroma stores only str/int/float/bool values, and no None.
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}


def ocr_ready(mode: str | None) -> bool:
    """Whether PDF pages without a text layer can be read by OCR here (rag.loaders.ocr and its extra installed)."""
    if mode == "never":
        return False
    try:
        from rag.loaders import ocr
    except ImportError:
        return False
    try:
        return bool(ocr.available())
    except Exception:
        return False
