"""Ingest: discover files, skip the unchanged ones, then load -> split -> embed -> commit file by file,
and report what happened to each.

The stages overlap: a reader (a child Python process when there are several files to read, a thread for a
single one) hashes, loads and splits the next files, at most `prefetch` ahead, while this process embeds; the
chunks of small files are embedded together, in batches of up to 4 x the embedding batch size. Each file is
still committed whole, on its own and in discovery order (`Store.replace_file`, under the manifest's 'pending'
mark), right after its last vector; memory holds at most the files being prefetched and about
READ_AHEAD_CHUNKS chunks waiting for vectors (plus the last file read).
A child process rather than a thread, because PDF parsing is pure Python: in a thread it holds the GIL that
the embedding loop needs between operators, and measured, that halved embedding throughput (see
notes/ingest-findings.md). A file that crashes the reader process (a segfault in a parser, the OOM killer) is
reported as failed and the run goes on with a new reader.

What a second run does with each kind of file: unchanged files (same size and mtime, or same sha256) are
skipped without parsing; a file that was read but had no text (empty, blank, scanned without OCR) is recorded
in the manifest with 0 chunks, so it counts as unchanged until it changes (or until OCR becomes available);
a file that could not be read (failed) is not recorded and is tried again, since it may have been fixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.loaders import SUPPORTED_SUFFIXES, LoadError, load_file
from rag.storage.store import FileRecord, Store

if TYPE_CHECKING:
    from rag.embeddings import LocalEmbeddings
    from rag.splitting import Splitter

PREFETCH = 2  # files read and split ahead of the ones being embedded
# Files are read ahead while fewer chunks than this wait for vectors: enough to keep the embedder busy through
# a long parse (a 261-page PDF reads for ~10 s), small enough to bound memory (texts only, ~1 MB).
READ_AHEAD_CHUNKS = 1024
MAX_READER_CRASHES = 3  # after this many crashed reader processes, read in a thread for the rest of the run
# Split by the parent and by a new reader process; the two must agree before the process is used.
_PROBE = ("Ingest probe. " * 40 + "\n\n" + "中文的句子，用来检查分块。" * 30 + "\n" + "x = 1; " * 60).strip()


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


# Progress callback: (event, amount). Events: "files" (total files found), "chunks" (chunks embedded),
# "file" (a file finished), "ocr" ((path, pages done, pages to OCR) after each OCR'd page: seconds each).
# The CLI turns these into progress bars; the API can ignore them.
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


@dataclass
class _Item:
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


class _Preparer:
    """Hash, load and split one file; touches no store, so it runs in a reader thread or process."""

    def __init__(self, splitter: Splitter, load_options: dict, fingerprint: str, empty_fingerprint: str) -> None:
        self.splitter = splitter
        self.load_options = load_options
        self.fingerprint = fingerprint
        self.empty_fingerprint = empty_fingerprint
        self.on_ocr_page: Callable[[str, int, int], None] | None = None  # (path, done, total)

    def current(self, old: FileRecord | None) -> bool:
        """Whether a manifest record was made by these settings (and is complete)."""
        if old is None or old.status != "done":
            return False
        return old.fingerprint == (self.empty_fingerprint if old.chunks == 0 else self.fingerprint)

    def quick(self, path: Path, old: FileRecord | None) -> _Item | os.stat_result:
        """Settle a file from its stat and manifest record alone, or return its stat for `prepare`."""
        try:
            st = path.stat()
        except OSError as exc:
            return _Item(path, "failed", message=f"{path}: cannot read ({exc.strerror})", old=old)
        if self.current(old) and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            return _Item(path, "unchanged", old=old)  # unchanged by size and mtime: not even read
        return st

    def prepare(self, path: Path, old: FileRecord | None, st: os.stat_result) -> _Item:
        source = str(path)
        try:
            digest = file_sha256(path)
        except OSError as exc:
            return _Item(path, "failed", message=f"{source}: cannot read ({exc.strerror})", old=old)
        if self.current(old) and old.sha256 == digest:
            return _Item(path, "touch", old=old, record=FileRecord(**{**old.__dict__, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        try:
            report = self.on_ocr_page
            on_page = (lambda done, total: report(source, done, total)) if report else None
            loaded = load_file(path, **self.load_options, ocr_progress=on_page)
            chunks = self.splitter.split(loaded.documents)
        except LoadError as exc:
            return _Item(path, "failed", message=str(exc), old=old)
        except Exception as exc:  # a bug or a library's surprise on one file must not stop the whole run
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            return _Item(path, "failed", message=f"{source}: cannot be read ({reason})", old=old)
        if not chunks:
            rec = FileRecord(source, st.st_size, st.st_mtime_ns, digest, loaded.pages, 0, self.empty_fingerprint,
                             "done", time.time(), [])
            return _Item(path, "empty", old=old, record=rec, warnings=list(loaded.warnings))
        rec = FileRecord(source, st.st_size, st.st_mtime_ns, digest, loaded.pages, len(chunks), self.fingerprint,
                         "done", time.time(), [])
        return _Item(path, "chunks", old=old, record=rec, warnings=list(loaded.warnings),
                     texts=[c.page_content for c in chunks], metadatas=[_chroma_metadata(c.metadata) for c in chunks])


class Ingestor:
    """Runs an ingest against one store with one embedder and splitter.

    `reader`: "auto" (a child process when two or more files need reading, else a thread), "process" or
    "thread".
    """

    def __init__(self, store: Store, embeddings: LocalEmbeddings, splitter: Splitter, fingerprint: str,
                 password: str | None = None, *, ocr: str | None = None, prefetch: int = PREFETCH,
                 reader: str = "auto") -> None:
        if reader not in ("auto", "process", "thread"):
            raise ValueError("reader must be 'auto', 'process' or 'thread'")
        self.store = store
        self.embeddings = embeddings
        self.splitter = splitter
        self.fingerprint = fingerprint
        self.password = password
        self.ocr = ocr
        self.prefetch = max(1, prefetch)
        self.reader = reader
        load_options: dict = {"password": password} | ({"ocr": ocr} if ocr is not None else {})
        # A file with no text is recorded under a fingerprint that also says whether OCR could read it, so that
        # installing OCR makes the next run look at such files again.
        empty_fingerprint = f"{fingerprint}+empty-{'ocr' if _ocr_ready(ocr) else 'no-ocr'}"
        self._preparer = _Preparer(splitter, load_options, fingerprint, empty_fingerprint)
        self._preparer.on_ocr_page = lambda path, done, total: self._notify("ocr", (path, done, total))
        # What a failure was judged under: a new password, OCR becoming available or new chunk settings retry it.
        secret = hashlib.sha256(password.encode()).hexdigest()[:12] if password else "-"
        self._failure_fingerprint = f"{empty_fingerprint}|password:{secret}|ocr:{ocr or 'auto'}"
        self._notify: Progress = lambda event, amount: None

    @property
    def empty_fingerprint(self) -> str:
        return self._preparer.empty_fingerprint

    def run(self, paths: Iterable[Path | str], prune: bool = False, progress: Progress | None = None) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport()
        self._notify = progress or (lambda event, amount: None)
        self._done: set[str] = set()
        files, errors = discover(paths)
        report.failed.extend(errors)
        self._notify("files", len(files))
        with self.store.writer():
            self._pipeline(files, report, announce=True)
            if prune:
                wanted = {str(p) for p in files}
                for rec in self.store.files():
                    if rec.source not in wanted and not Path(rec.source).exists():
                        self.store.delete_file(rec.source)
                        report.pruned.append(rec.source)
                for source in self.store.failures():
                    if source not in wanted and not Path(source).exists():
                        self.store.forget_failure(source)
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
        to_read = sum(not isinstance(q, _Item) for _, _, q in looked)
        todo = deque(looked)
        window: deque[_Item | Future] = deque()  # in order; a Future while its file is being read
        ready: deque[_Item] = deque()  # read, in order, waiting for vectors and their commit
        step = max(1, self.embeddings.batch_size * 4)
        batch = max(1, self.embeddings.batch_size)
        read_ahead = max(step, READ_AHEAD_CHUNKS)
        readers = _Readers(self._preparer, self.embeddings, process=self.reader == "process" or (self.reader == "auto" and to_read >= 2))
        try:
            while todo or window or ready:
                # Read ahead: at most `prefetch` files at a time, and only while fewer than READ_AHEAD_CHUNKS
                # chunks are waiting, so that memory is bounded by a few files, never by the corpus.
                in_flight = sum(isinstance(w, Future) for w in window)
                waiting = sum(item.missing for item in ready)
                while todo and in_flight < self.prefetch and waiting < read_ahead:
                    path, old, quick = todo.popleft()
                    if isinstance(quick, _Item):
                        window.append(quick)
                    else:
                        window.append(readers.submit(path, old, quick))
                        in_flight += 1
                while window and (isinstance(window[0], _Item) or window[0].done()):
                    head = window.popleft()
                    if isinstance(head, Future):
                        item = readers.result(head)
                        if item is None:  # its reader process died before reaching it: read it again
                            window.appendleft(readers.resubmit(head))
                            continue
                        head = item
                    ready.append(head)
                waiting = sum(item.missing for item in ready)
                loading = bool(window) and isinstance(window[0], Future)  # the next file is still being read
                if waiting >= step:
                    self._embed(ready, step)
                elif waiting and not (window or todo):
                    self._embed(ready, waiting)  # the last chunks of the run
                elif waiting >= batch and loading:
                    self._embed(ready, waiting - waiting % batch)  # whole batches while the next file is read
                elif loading:
                    wait([window[0]], return_when=FIRST_COMPLETED)
                while ready and ready[0].missing == 0:
                    item = ready.popleft()
                    self._apply(item, report)
                    if announce:
                        self._notify("file", item.path)
        finally:
            readers.close()

    def _embed(self, ready: deque[_Item], n: int) -> None:
        """Embed the next `n` chunks waiting in `ready`, across files, in one call."""
        pieces: list[tuple[_Item, int, int]] = []
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

    def _still_failing(self, path: Path, old: FileRecord | None) -> _Item | None:
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
        return _Item(path, "still_failing", message=f"{reason} (unchanged since the last run: not read again)", old=old)

    def _apply(self, item: _Item, report: IngestReport) -> None:
        """Commit one read file to the store and the report (this thread, in discovery order)."""
        source = item.source
        if item.kind == "still_failing":
            report.unchanged.append(source)
            report.still_failing.append(item.message)
            return
        if item.kind == "failed":
            try:
                st = item.path.stat()
                self.store.remember_failure(source, st.st_size, st.st_mtime_ns, self._failure_fingerprint, item.message)
            except OSError:
                pass  # gone or unreadable: nothing to compare with next time
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


# --- readers: where files are hashed, loaded and split ------------------------------------------------------
class _Readers:
    """Hands files to a reader process (or thread) in order; restarts a process that died, falls back to a
    thread when processes cannot be used."""

    def __init__(self, preparer: _Preparer, embeddings: Any, process: bool) -> None:
        self.preparer = preparer
        self.recipe = _splitter_recipe(preparer.splitter, embeddings) if process else None
        self.process: _ReaderProcess | None = None
        self.thread: ThreadPoolExecutor | None = None
        self.crashes = 0
        self.args: dict[Future, tuple] = {}

    def submit(self, path: Path, old: FileRecord | None, st: os.stat_result) -> Future:
        fut = None
        if self.recipe is not None and self.crashes < MAX_READER_CRASHES:
            if self.process is None or self.process.dead:
                try:
                    self.process = _ReaderProcess(self.preparer, self.recipe)
                except _ReaderUnavailable:
                    self.recipe = None  # e.g. a splitter the child cannot rebuild: threads from now on
            if self.recipe is not None:
                fut = self.process.submit(path, old, st)
        if fut is None:
            self.thread = self.thread or ThreadPoolExecutor(1, thread_name_prefix="rag-ingest-read")
            fut = self.thread.submit(self.preparer.prepare, path, old, st)
        self.args[fut] = (path, old, st)
        return fut

    def result(self, fut: Future) -> _Item | None:
        """The read file, or None when its reader process died before reaching it."""
        args = self.args.pop(fut, None)
        try:
            return fut.result()
        except _ReaderCrashed as exc:
            self.crashes += 1
            path = args[0] if args else "?"
            return _Item(Path(path), "failed", message=f"{path}: {exc.reason}", old=args[1] if args else None)
        except _ReaderGone:
            self.args[fut] = args
            return None
        except _ReaderError as exc:
            path = args[0] if args else "?"
            return _Item(Path(path), "failed", message=f"{path}: cannot be read (reader error: {exc})"[:300], old=args[1] if args else None)

    def resubmit(self, fut: Future) -> Future:
        return self.submit(*self.args.pop(fut))

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
        if self.thread is not None:
            self.thread.shutdown(wait=False, cancel_futures=True)


class _ReaderUnavailable(Exception):
    """A reader process could not be started or does not split as this process does."""


class _ReaderCrashed(Exception):
    """The reader process died while reading this file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ReaderGone(Exception):
    """The reader process died before it got to this file."""


class _ReaderError(Exception):
    """The reader process failed on a file in a way `_Preparer.prepare` did not catch (a bug)."""


def _splitter_recipe(splitter: Any, embeddings: Any) -> dict | None:
    """What a child process needs to rebuild `splitter` (a rag Splitter over the embedding model's tokenizer)."""
    model_dir = getattr(embeddings, "model_dir", None)
    inner = getattr(splitter, "_splitter", None)
    overlap = getattr(splitter, "chunk_overlap", getattr(inner, "_chunk_overlap", None))
    size = getattr(splitter, "chunk_size", None)
    if model_dir is None or overlap is None or size is None or not (Path(model_dir) / "tokenizer.json").exists():
        return None
    return {"model_dir": str(model_dir), "chunk_size": int(size), "chunk_overlap": int(overlap)}


class _ReaderProcess:
    """A child Python process (`python -c "from rag.ingest import reader_main; ..."`, a clean interpreter:
    no inherited store lock, no re-import of the caller's main script) that reads files one at a time.

    Pickled messages over its stdin/stdout; a thread here collects the results into Futures. The child ends
    when its stdin closes, so it never outlives this process by more than the file it is reading."""

    def __init__(self, preparer: _Preparer, recipe: dict) -> None:
        self.dead = False
        self.on_event = lambda *event: preparer.on_ocr_page(*event) if preparer.on_ocr_page else None
        self.lock = threading.Lock()
        self.pending: dict[int, Future] = {}
        self.seq = 0
        # The child imports this very rag package, wherever it was imported from here.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               "TOKENIZERS_PARALLELISM": "false"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from rag.ingest import reader_main; reader_main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, env=env,
            )
        except OSError as exc:
            raise _ReaderUnavailable(str(exc)) from None
        self.collector = threading.Thread(target=self._collect, name="rag-ingest-collect", daemon=True)
        self.collector.start()
        config = {**recipe, "load_options": preparer.load_options, "fingerprint": preparer.fingerprint,
                  "empty_fingerprint": preparer.empty_fingerprint}
        try:
            self._send(("config", config))
            probe = self._request(("probe", _PROBE))
            expected = [c.page_content for c in preparer.splitter.split([_probe_document()])]
            if probe.result(timeout=120) != expected:
                raise _ReaderUnavailable("the reader process splits differently")
        except Exception as exc:
            self.close()
            raise _ReaderUnavailable(str(exc)) from None

    def submit(self, path: Path, old: FileRecord | None, st: os.stat_result) -> Future:
        return self._request(("prepare", (path, old, st)))

    def _request(self, message: tuple) -> Future:
        fut: Future = Future()
        with self.lock:
            if self.dead:
                fut.set_exception(_ReaderGone())
                return fut
            self.seq += 1
            self.pending[self.seq] = fut
            seq = self.seq
        try:
            self._send((seq, *message))
        except OSError:
            pass  # the collector sees the end of the pipe and settles the future
        return fut

    def _send(self, message: tuple) -> None:
        pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()

    def _collect(self) -> None:
        out = self.proc.stdout
        while True:
            try:
                seq, ok, value = pickle.load(out)
            except Exception:  # EOF or a torn message: the child is gone
                break
            if seq == 0:  # an event about the file being read (OCR page progress), not a result
                with contextlib.suppress(Exception):
                    self.on_event(*value)
                continue
            with self.lock:
                fut = self.pending.pop(seq, None)
            if fut is not None:
                fut.set_result(value) if ok else fut.set_exception(_ReaderError(value))
        code = self.proc.wait()
        with self.lock:
            self.dead = True
            pending = [self.pending.pop(k) for k in sorted(self.pending)]
        if pending:  # the oldest was being read when it died; the others were not started
            how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            pending[0].set_exception(_ReaderCrashed(f"reading it crashed the reader process ({how}{hint})"))
            for fut in pending[1:]:
                fut.set_exception(_ReaderGone())

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the child ends after the file it is reading
        except OSError:
            pass
        try:
            self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # this run is over (finished or interrupted): no need for its last file
            self.proc.wait()


def _probe_document():
    from langchain_core.documents import Document

    return Document(page_content=_PROBE, metadata={"source": "probe"})


def reader_main() -> None:
    """The reader process: read (config), then (seq, "prepare", args) / (seq, "probe", text) messages from
    stdin, answer (seq, ok, value) on stdout, until stdin closes."""
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then closes our stdin
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the pickles
    inp = sys.stdin.buffer
    warnings.simplefilter("ignore")
    _, config = pickle.load(inp)
    from rag.splitting import Splitter, token_counter

    splitter = Splitter(token_counter(Path(config["model_dir"])), config["chunk_size"], config["chunk_overlap"])
    preparer = _Preparer(splitter, config["load_options"], config["fingerprint"], config["empty_fingerprint"])

    def send_event(*event: Any) -> None:  # seq 0: an event, not an answer (prepare runs in this thread only)
        out.write(pickle.dumps((0, True, event), protocol=pickle.HIGHEST_PROTOCOL))
        out.flush()

    preparer.on_ocr_page = send_event
    while True:
        try:
            seq, kind, payload = pickle.load(inp)
        except EOFError:
            return
        try:
            if kind == "probe":
                value = [c.page_content for c in splitter.split([_probe_document()])]
            else:
                value = preparer.prepare(*payload)
            data = pickle.dumps((seq, True, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # prepare() catches per-file errors; this is a bug in the reader itself
            data = pickle.dumps((seq, False, " ".join(f"{type(exc).__name__}: {exc}".split())[:200]))
        try:
            out.write(data)
            out.flush()
        except (BrokenPipeError, OSError):
            return


def _ocr_ready(mode: str | None) -> bool:
    """Whether PDF pages without a text layer can be read by OCR here (rag.ocr and its extra installed)."""
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


def _chroma_metadata(meta: dict) -> dict:
    # Chroma stores only str/int/float/bool values, and no None.
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
