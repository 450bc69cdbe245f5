"""Ingest: discover files, skip the unchanged ones, then load -> split -> embed -> commit file by file,
and report what happened to each."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rag.embeddings import LocalEmbeddings
from rag.loaders import SUPPORTED_SUFFIXES, LoadError, load_file
from rag.splitting import Splitter
from rag.store import FileRecord, Store


@dataclass
class IngestReport:
    """What an ingest did; `failed` and `warnings` hold one-line messages naming the file."""

    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # readable but nothing to ingest (empty, no text layer)
    failed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return len(self.ingested) + len(self.unchanged) + len(self.skipped) + len(self.failed)


# Progress callback: (event, amount). Events: "files" (total files found), "chunks" (chunks embedded),
# "file" (a file finished). The CLI turns these into progress bars; the API can ignore them.
Progress = Callable[[str, object], None]


def discover(paths: Iterable[Path | str]) -> tuple[list[Path], list[str]]:
    """Supported files under `paths` (recursive, sorted, hidden files skipped) and errors for missing paths."""
    found: dict[Path, None] = {}
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    p = Path(root, name)
                    if not name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES:
                        found[p.resolve()] = None
        else:
            errors.append(f"{path}: no such file or folder")
    return list(found), errors


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Ingestor:
    """Runs an ingest against one store with one embedder and splitter."""

    def __init__(self, store: Store, embeddings: LocalEmbeddings, splitter: Splitter, fingerprint: str,
                 password: str | None = None) -> None:
        self.store = store
        self.embeddings = embeddings
        self.splitter = splitter
        self.fingerprint = fingerprint
        self.password = password

    def run(self, paths: Iterable[Path | str], prune: bool = False, progress: Progress | None = None) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport()
        self._notify = progress or (lambda event, amount: None)
        self._done: set[str] = set()
        files, errors = discover(paths)
        report.failed.extend(errors)
        self._notify("files", len(files))
        with self.store.writer():
            for path in files:
                self._one(path, report)
                self._notify("file", path)
            if prune:
                wanted = {str(p) for p in files}
                for rec in self.store.files():
                    if rec.source not in wanted and not Path(rec.source).exists():
                        self.store.delete_file(rec.source)
                        report.pruned.append(rec.source)
            self._redo_pending(report)
            if report.ingested or report.pruned or report.skipped:
                self.store.lexical()  # rebuild now, so the first question does not pay for it
        report.seconds = time.perf_counter() - started
        return report

    def _one(self, path: Path, report: IngestReport) -> None:
        source = str(path)
        self._done.add(source)
        try:
            st = path.stat()
        except OSError as exc:
            report.failed.append(f"{source}: cannot read ({exc.strerror})")
            return
        old = self.store.manifest.get(source)
        if old and old.status == "done" and old.fingerprint == self.fingerprint:
            # Unchanged by size and mtime: skip without reading the file at all.
            if old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                report.unchanged.append(source)
                return
        digest = file_sha256(path)
        if old and old.status == "done" and old.fingerprint == self.fingerprint and old.sha256 == digest:
            self.store.touch(FileRecord(**{**old.__dict__, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
            report.unchanged.append(source)
            return
        try:
            loaded = load_file(path, password=self.password)
        except LoadError as exc:
            report.failed.append(str(exc))
            if old and old.status == "pending":
                self.store.delete_file(source)  # half-replaced by an interrupted run: drop, never keep half
            return
        report.warnings.extend(loaded.warnings)
        chunks = self.splitter.split(loaded.documents)
        if not chunks:
            # Nothing to ingest; an older version's chunks must not outlive the file's content.
            if old:
                self.store.delete_file(source)
            report.skipped.append(source)
            return
        texts = [c.page_content for c in chunks]
        vectors: list[list[float]] = []
        step = self.embeddings.batch_size * 4
        for start in range(0, len(texts), step):
            vectors.extend(self.embeddings.embed_documents(texts[start : start + step]))
            self._notify("chunks", min(step, len(texts) - start))
        metadatas = [_chroma_metadata(c.metadata) for c in chunks]
        rec = FileRecord(source, st.st_size, st.st_mtime_ns, digest, loaded.pages, len(chunks), self.fingerprint,
                         "done", time.time(), [])
        self.store.replace_file(rec, texts, vectors, metadatas)
        report.ingested.append(source)
        report.pages += loaded.pages
        report.chunks += len(chunks)

    def _redo_pending(self, report: IngestReport) -> None:
        """A file left 'pending' by an interrupted run is redone, or removed when it is gone from disk."""
        for rec in self.store.files():
            if rec.status != "pending" or rec.source in self._done:
                continue
            path = Path(rec.source)
            if path.exists():
                self._one(path, report)
            else:
                self.store.delete_file(rec.source)
                report.pruned.append(rec.source)


def _chroma_metadata(meta: dict) -> dict:
    # Chroma stores only str/int/float/bool values, and no None.
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
