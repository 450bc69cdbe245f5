"""The ingest run: discover the files, settle the unchanged ones from the manifest, read the others ahead in a
reader while this process embeds, commit each file whole and in discovery order, and report what happened
to each. It uses the store through its methods only."""

from __future__ import annotations

import functools
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rag.ingest.discover import discover
from rag.ingest.prepare import Item, Preparer, ocr_ready
from rag.ingest.readers import Readers
from rag.storage.store import FileRecord, Store

if TYPE_CHECKING:
    from rag.embeddings import LocalEmbeddings
    from rag.splitting import Splitter

PREFETCH = 2  # files read and split ahead of the ones being embedded
# Files are read ahead while fewer chunks than this wait for vectors: enough to keep the embedder busy through
# a long parse (a 261-page PDF reads for ~10 s), small enough to bound memory (texts only, ~1 MB).
READ_AHEAD_CHUNKS = 1024

# Progress callback: (event, amount). Events: "files" (total files found), "chunks" (chunks embedded),
# "file" (a file finished), "ocr" ((path, pages done, pages to OCR) after each OCR'd page: seconds each).
# The CLI turns these into progress bars; the API can ignore them.
Progress = Callable[[str, object], None]


@dataclass
class IngestReport:
    """What an ingest did; `failed` and `warnings` hold one-line messages naming the file."""

    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # readable but nothing to ingest (empty, no text layer)
    failed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Files counted as unchanged that could not be read last time either: not read again until they change
    # (or the password / OCR / chunk settings do). One line each, naming the file and the reason.
    still_failing: list[str] = field(default_factory=list)
    pages: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return len(self.ingested) + len(self.unchanged) + len(self.skipped) + len(self.failed)


class Ingestor:
    """Runs an ingest against one store with one embedder and splitter.

    `embeddings` and `splitter` may each be given as a function that returns it: it is then called only when a
    file needs reading, so that a run with nothing to read loads no model. `reader`: "auto" (a child process when
    two or more files need reading, else a thread), "process" or "thread". `readers`: what reads the files, made
    as `readers(preparer, embeddings, process)` (default `Readers`; the Ray ingest passes its own).
    """

    def __init__(self, store: Store, embeddings: LocalEmbeddings | Callable[[], LocalEmbeddings],
                 splitter: Splitter | Callable[[], Splitter], fingerprint: str, password: str | None = None, *,
                 ocr: str | None = None, pdf_tables: bool = True, prefetch: int = PREFETCH, reader: str = "auto",
                 readers: Callable[..., Readers] = Readers) -> None:
        if reader not in ("auto", "process", "thread"):
            raise ValueError("reader must be 'auto', 'process' or 'thread'")
        self.store = store
        self._parts = (embeddings, splitter)
        self.fingerprint = fingerprint
        self.password = password
        self.ocr = ocr
        self.prefetch = max(1, prefetch)
        self.reader = reader
        self._readers = readers
        load_options: dict = {"password": password, "pdf_tables": pdf_tables} | ({"ocr": ocr} if ocr is not None else {})
        # A file with no text is recorded under a fingerprint that also says whether OCR could read it, so that
        # installing OCR makes the next run look at such files again.
        empty_fingerprint = f"{fingerprint}+empty-{'ocr' if ocr_ready(ocr) else 'no-ocr'}"
        self._preparer = Preparer(None, load_options, fingerprint, empty_fingerprint)
        self._preparer.on_ocr_page = lambda path, done, total: self._notify("ocr", (path, done, total))
        # What a failure was judged under: a new password, OCR becoming available or new chunk settings retry it.
        secret = hashlib.sha256(password.encode()).hexdigest()[:12] if password else "-"
        self._failure_fingerprint = f"{empty_fingerprint}|password:{secret}|ocr:{ocr or 'auto'}"
        self._notify: Progress = lambda event, amount: None

    @property
    def empty_fingerprint(self) -> str:
        return self._preparer.empty_fingerprint

    @functools.cached_property
    def embeddings(self) -> LocalEmbeddings:
        embeddings = self._parts[0]
        return embeddings if hasattr(embeddings, "embed_documents") else embeddings()

    @functools.cached_property
    def splitter(self) -> Splitter:
        splitter = self._parts[1]
        return splitter if hasattr(splitter, "split") else splitter()

    def _load_parts(self) -> None:
        """The embedder and splitter, for the first file to read; chunks are embedded `step` at a time across
        files (fewer, in whole batches, while a file is read)."""
        self._preparer.splitter = self.splitter
        self._batch = max(1, self.embeddings.batch_size)
        self._step = self._batch * 4
        self._read_ahead_limit = max(self._step, READ_AHEAD_CHUNKS)

    def run(self, paths: Iterable[Path | str], prune: bool = False, progress: Progress | None = None, *,
            wait: bool = False) -> IngestReport:
        """Ingest `paths`; `wait`: wait for another writer to finish instead of refusing (`rag watch`)."""
        started = time.perf_counter()
        report = IngestReport()
        self._notify = progress or (lambda event, amount: None)
        self._done: set[str] = set()
        files, errors = discover(paths)
        report.failed.extend(errors)
        self._notify("files", len(files))
        with self.store.writer(wait=wait):
            self._pipeline(files, report, announce=True)
            if prune:
                self._prune({str(p) for p in files}, report)
            self._redo_pending(report)
            if report.ingested or report.pruned or report.skipped:
                self.store.lexical()  # rebuild now, so the first question does not pay for it
        report.seconds = time.perf_counter() - started
        return report

    # --- the pipeline -------------------------------------------------------------------------------------
    def _pipeline(self, files: list[Path], report: IngestReport, announce: bool) -> None:
        """Read files ahead in a reader, embed here, commit in order."""
        known = {rec.source: rec for rec in self.store.files()}  # we hold the write lock: nobody else changes it
        self._failures = self.store.failures()
        looked = [(path, known.get(str(path))) for path in files]
        looked = [(path, old, self._still_failing(path, old) or self._preparer.quick(path, old)) for path, old in looked]
        self._done.update(str(path) for path in files)
        to_read = sum(not isinstance(q, Item) for _, _, q in looked)
        if not to_read:
            for item in (q for _, _, q in looked):  # all settled from the manifest: no model, no reader
                self._apply(item, report)
                if announce:
                    self._notify("file", item.path)
            return
        self._load_parts()
        todo = deque(looked)
        window: deque[Item | Future] = deque()  # in order; a Future while its file is being read
        ready: deque[Item] = deque()  # read, in order, waiting for vectors and their commit
        process = self.reader == "process" or (self.reader == "auto" and to_read >= 2)
        readers = self._readers(self._preparer, self.embeddings, process=process)
        try:
            while todo or window or ready:
                self._read_ahead(todo, window, ready, readers)
                self._take_read(window, ready, readers)
                loading = bool(window) and isinstance(window[0], Future)  # the next file is still being read
                if not self._embed_some(ready, loading, last=not (window or todo)) and loading:
                    wait([window[0]], return_when=FIRST_COMPLETED)
                while ready and ready[0].missing == 0:
                    item = ready.popleft()
                    self._apply(item, report)
                    if announce:
                        self._notify("file", item.path)
        finally:
            readers.close()

    def _read_ahead(self, todo: deque, window: deque[Item | Future], ready: deque[Item], readers: Readers) -> None:
        """Hand files to the reader: at most `prefetch` at a time, and only while fewer than READ_AHEAD_CHUNKS
        chunks are waiting, so that memory is bounded by a few files, never by the corpus."""
        in_flight = sum(isinstance(w, Future) for w in window)
        waiting = sum(item.missing for item in ready)
        while todo and in_flight < self.prefetch and waiting < self._read_ahead_limit:
            path, old, quick = todo.popleft()
            if isinstance(quick, Item):
                window.append(quick)
            else:
                window.append(readers.submit(path, old, quick))
                in_flight += 1

    @staticmethod
    def _take_read(window: deque[Item | Future], ready: deque[Item], readers: Readers) -> None:
        """Move the files at the head of the window that are read (or settled) to `ready`, in order."""
        while window and (isinstance(window[0], Item) or window[0].done()):
            head = window.popleft()
            if isinstance(head, Future):
                item = readers.result(head)
                if item is None:  # its reader process died before reaching it: read it again
                    window.appendleft(readers.resubmit(head))
                    continue
                head = item
            ready.append(head)

    def _embed_some(self, ready: deque[Item], loading: bool, last: bool) -> bool:
        """Embed what is waiting: a full step; the rest at the end; whole batches while the next file is read.
        False when nothing was worth embedding yet."""
        waiting = sum(item.missing for item in ready)
        if waiting >= self._step:
            self._embed(ready, self._step)
        elif waiting and last:
            self._embed(ready, waiting)  # the last chunks of the run
        elif waiting >= self._batch and loading:
            self._embed(ready, waiting - waiting % self._batch)
        else:
            return False
        return True

    def _embed(self, ready: deque[Item], n: int) -> None:
        """Embed the next `n` chunks waiting in `ready`, across files, in one call."""
        pieces: list[tuple[Item, int, int]] = []
        taken = 0
        for item in ready:
            if taken >= n:
                break
            if item.missing:
                start = len(item.vectors)
                take = min(item.missing, n - taken)
                pieces.append((item, start, start + take))
                taken += take
        texts = [t for item, s, e in pieces for t in item.texts[s:e]]
        vectors = self.embeddings.embed_documents(texts)
        at = 0
        for item, s, e in pieces:
            item.vectors.extend(vectors[at : at + e - s])
            at += e - s
        self._notify("chunks", len(texts))

    def _still_failing(self, path: Path, old: FileRecord | None) -> Item | None:
        """The file failed last time, and neither it nor the settings it was read with changed since."""
        failure = self._failures.get(str(path))
        if failure is None or (old is not None and old.status == "pending"):
            return None
        size, mtime_ns, fingerprint, reason = failure
        try:
            st = path.stat()
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns, fingerprint) != (size, mtime_ns, self._failure_fingerprint):
            return None
        return Item(path, "still_failing", message=f"{reason} (unchanged since the last run: not read again)", old=old)

    # --- committing ---------------------------------------------------------------------------------------
    def _apply(self, item: Item, report: IngestReport) -> None:
        """Commit one read file to the store and the report (this thread, in discovery order)."""
        source = item.source
        if item.kind == "still_failing":
            report.unchanged.append(source)
            report.still_failing.append(item.message)
            return
        if item.kind == "failed":
            self._remember_failure(item)
        elif source in self._failures:
            self.store.forget_failure(source)  # read fine now
        if item.kind == "unchanged":
            report.unchanged.append(source)
        elif item.kind == "touch":
            self.store.touch(item.record)
            report.unchanged.append(source)
        elif item.kind == "failed":
            report.failed.append(item.message)
            if item.old and item.old.status == "pending":
                self.store.delete_file(source)  # half-replaced by an interrupted run: drop, never keep half
        elif item.kind == "empty":
            # Nothing to ingest; an older version's chunks must not outlive the file's content. The 0-chunk
            # record lets the next run call it unchanged.
            report.warnings.extend(item.warnings)
            self.store.replace_file(item.record, [], [], [])
            report.skipped.append(source)
        else:
            report.warnings.extend(item.warnings)
            self.store.replace_file(item.record, item.texts, item.vectors, item.metadatas)
            report.ingested.append(source)
            report.pages += item.record.pages
            report.chunks += len(item.texts)
            item.texts, item.vectors, item.metadatas = [], [], []  # let the memory go now

    def _remember_failure(self, item: Item) -> None:
        try:
            st = item.path.stat()
        except OSError:
            return  # gone or unreadable: nothing to compare with next time
        self.store.remember_failure(item.source, st.st_size, st.st_mtime_ns, self._failure_fingerprint, item.message)

    def _prune(self, wanted: set[str], report: IngestReport) -> None:
        """Forget the files (and remembered failures) that are gone from disk and were not asked for."""
        for rec in self.store.files():
            if rec.source not in wanted and not Path(rec.source).exists():
                self.store.delete_file(rec.source)
                report.pruned.append(rec.source)
        for source in self.store.failures():
            if source not in wanted and not Path(source).exists():
                self.store.forget_failure(source)

    def _redo_pending(self, report: IngestReport) -> None:
        """A file left 'pending' by an interrupted run is redone, or removed when it is gone from disk."""
        redo = []
        for rec in self.store.files():
            if rec.status != "pending" or rec.source in self._done:
                continue
            path = Path(rec.source)
            if path.exists():
                redo.append(path)
            else:
                self.store.delete_file(rec.source)
                report.pruned.append(rec.source)
        if redo:
            self._pipeline(redo, report, announce=False)
