"""Where files are read: a reader process (the standard library's ProcessPoolExecutor with one spawned worker)
or a thread hashes, loads and splits the files the pipeline hands it, and gives back their Items.

A process rather than a thread, because PDF parsing is pure Python: in a thread it holds the GIL that the
embedding loop needs between operators, and measured, that halved embedding throughput (see
benchmarks/notes/ingest-findings.md). Spawned, not forked: the reader inherits neither the store's write lock
nor the embedder's threads. As with every spawned process, a script that ingests must keep its top-level code
under `if __name__ == "__main__":`; without that guard the reader cannot start and files are read in a thread.
A file that kills the reader (a segfault in a parser, the OOM killer) fails alone: a new reader process reads
the other files (after MAX_READER_CRASHES crashes, a thread does). The reader process exits with the ingest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import warnings
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.ingest.prepare import Item, Preparer, one_line
from rag.storage.store import FileRecord

MAX_READER_CRASHES = 3  # after this many crashed reader processes, read in a thread for the rest of the run
PROBE_SECONDS = 120  # only a safety net: a reader process that cannot split the probe by then is not used
# Split by this process and by each new reader process; the two must agree before the process is used.
PROBE = ("Ingest probe. " * 40 + "\n\n" + "中文的句子，用来检查分块。" * 30 + "\n" + "x = 1; " * 60).strip()


class _Unavailable(Exception):
    """A reader process could not be started or does not split as this process does."""


@dataclass
class _Job:
    """A file handed to a reader: `seq` numbers each hand-over; `pool` is None for the reader thread."""

    seq: int
    path: Path
    old: FileRecord | None
    st: os.stat_result
    pool: _Pool | None = None


class Readers:
    """Hands files to the reader process (or thread) in order and gives back what each one read."""

    def __init__(self, preparer: Preparer, embeddings: Any, process: bool) -> None:
        self.preparer = preparer
        self.config = _reader_config(preparer, embeddings) if process else None  # None: read in a thread
        self.pool: _Pool | None = None
        self.thread: ThreadPoolExecutor | None = None
        self.crashes = 0
        self.jobs: dict[Future, _Job] = {}
        self.seq = 0

    def submit(self, path: Path, old: FileRecord | None, st: os.stat_result) -> Future:
        return self._submit(_Job(0, path, old, st))

    def result(self, fut: Future) -> Item | None:
        """The read file, or None when its reader process died before reaching it (then `resubmit` it)."""
        job = self.jobs[fut]
        try:
            if job.pool is None:
                item = fut.result()
            else:
                item, events = fut.result()
                job.pool.settle(job.seq, events)  # its OCR progress is passed on before its file is done
        except BrokenProcessPool:
            self._retire(job.pool)
            if job.seq != job.pool.culprit:
                return None
            item = Item(job.path, "failed", message=f"{job.path}: {job.pool.reason}", old=job.old)
        except Exception as exc:  # not the file's fault (prepare() reports those): a bug in the reader
            item = Item(job.path, "failed", message=f"{job.path}: cannot be read (reader error: {one_line(exc)})",
                        old=job.old)
        del self.jobs[fut]
        return item

    def resubmit(self, fut: Future) -> Future:
        return self._submit(self.jobs.pop(fut))

    def close(self) -> None:
        """Stop reading; a reader process in the middle of a file (Ctrl-C, an error) is killed, not waited for."""
        if self.pool is not None:
            self.pool.close(now=any(job.pool is self.pool and not fut.done() for fut, job in self.jobs.items()))
            self.pool = None
        if self.thread is not None:
            self.thread.shutdown(wait=False, cancel_futures=True)

    def _submit(self, job: _Job) -> Future:
        self.seq += 1
        job.seq, job.pool = self.seq, self._current_pool()
        if job.pool is None:
            self.thread = self.thread or ThreadPoolExecutor(1, thread_name_prefix="rag-ingest-read")
            fut = self.thread.submit(self.preparer.prepare, job.path, job.old, job.st)
        else:
            try:
                fut = job.pool.executor.submit(_read, job.seq, job.path, job.old, job.st)
            except BrokenProcessPool:  # died before its futures said so
                self._retire(job.pool)
                return self._submit(job)
        self.jobs[fut] = job
        return fut

    def _current_pool(self) -> _Pool | None:
        """The reader process's pool, started when first needed; None when files are read in a thread."""
        if self.config is None or self.crashes >= MAX_READER_CRASHES:
            return None
        if self.pool is None:
            try:
                self.pool = _Pool(self.config, self.preparer)
            except _Unavailable:
                self.config = None  # e.g. an unguarded main script: threads from now on
        return self.pool

    def _retire(self, pool: _Pool) -> None:
        """Once per dead reader process: the oldest file it had not answered is the one it died reading."""
        if pool.reason is not None:
            return
        unanswered = [job.seq for fut, job in self.jobs.items() if job.pool is pool and not _answered(fut)]
        pool.culprit = min(unanswered, default=None)
        pool.reason = pool.crash_reason()
        self.crashes += 1
        if self.pool is pool:
            self.pool = None


def _answered(fut: Future) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


class _Pool:
    """A ProcessPoolExecutor with one spawned reader process, and a thread that passes that process's progress
    events (OCR pages, sent through a pipe) on to the preparer's callback here as they come."""

    def __init__(self, config: dict, preparer: Preparer) -> None:
        self.culprit: int | None = None  # once the process died: the job it was reading
        self.reason: str | None = None
        self.delivered: Counter[int] = Counter()  # progress events passed on, by job
        self.ended = False
        self.cond = threading.Condition()
        ctx = multiprocessing.get_context("spawn")
        events, sender = ctx.Pipe(duplex=False)
        self.executor = ProcessPoolExecutor(1, mp_context=ctx, initializer=_start_reader, initargs=(config, sender))
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.thread = threading.Thread(target=self._pass_events, args=(events, preparer), name="rag-ingest-events",
                                       daemon=True)
        self.thread.start()
        try:
            pid, chunks = self._start(sender)
        except BaseException as exc:  # it could not start (or split), or Ctrl-C
            self.close(now=True)
            if isinstance(exc, Exception):
                raise _Unavailable(one_line(exc)) from None
            raise
        self.processes = [p for p in self.processes if p.pid == pid]
        if chunks != split_probe(preparer.splitter):
            self.close(now=True)
            raise _Unavailable("the reader process splits differently")

    def _start(self, sender: multiprocessing.connection.Connection) -> tuple[int, list[str]]:
        """Start the reader process; it answers with its pid and its split of the probe text."""
        before = set(multiprocessing.active_children())
        try:
            probe = self.executor.submit(_reader_probe)
        finally:
            sender.close()  # the reader holds the only write end now: the events thread ends when the reader does
            self.processes = [p for p in multiprocessing.active_children() if p not in before]
        return probe.result(timeout=PROBE_SECONDS)

    def _pass_events(self, events: multiprocessing.connection.Connection, preparer: Preparer) -> None:
        while True:
            try:
                seq, (source, done, total) = events.recv()
            except (EOFError, OSError):  # the reader process has exited
                break
            with contextlib.suppress(Exception):  # a progress display's error must not stop the ingest
                if preparer.on_ocr_page is not None:
                    preparer.on_ocr_page(source, done, total)
            with self.cond:
                self.delivered[seq] += 1
                self.cond.notify_all()
        events.close()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def settle(self, seq: int, sent: int) -> None:
        """Wait until the `sent` progress events of job `seq` have been passed on."""
        with self.cond:
            self.cond.wait_for(lambda: self.delivered[seq] >= sent or self.ended)
            self.delivered.pop(seq, None)

    def crash_reason(self) -> str:
        self.close(now=False)  # the pool has reaped its dead process once it is shut down: its exit code is known
        code = self.processes[0].exitcode if len(self.processes) == 1 else None
        if code is None:
            return "reading it crashed the reader process"
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        return f"reading it crashed the reader process ({how}{hint})"

    def close(self, now: bool) -> None:
        if now:
            for process in self.processes:
                process.kill()  # in the middle of a file nobody wants any more
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.thread.join()


def _reader_config(preparer: Preparer, embeddings: Any) -> dict | None:
    """What a reader process needs to rebuild `preparer`: its splitter must be a rag Splitter over the embedding
    model's tokenizer, else None (files are read in a thread)."""
    model_dir = getattr(embeddings, "model_dir", None)
    size = getattr(preparer.splitter, "chunk_size", None)
    overlap = getattr(preparer.splitter, "chunk_overlap", None)
    if model_dir is None or size is None or overlap is None or not (Path(model_dir) / "tokenizer.json").exists():
        return None
    return {"model_dir": str(model_dir), "chunk_size": int(size), "chunk_overlap": int(overlap),
            "load_options": preparer.load_options, "fingerprint": preparer.fingerprint,
            "empty_fingerprint": preparer.empty_fingerprint}


def split_probe(splitter: Any) -> list[str]:
    from langchain_core.documents import Document

    return [c.page_content for c in splitter.split([Document(page_content=PROBE, metadata={"source": "probe"})])]


# --- in the reader process ----------------------------------------------------------------------------------
_reader: dict[str, Any] = {}  # its Preparer and the write end of its event pipe


def _start_reader(config: dict, events: multiprocessing.connection.Connection) -> None:
    """The reader process's initializer: builds its Preparer and splitter once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the ingest, which then stops this process
    os.dup2(2, 1)  # stdout is the caller's output (a report, JSON): what a parser prints goes to stderr
    warnings.simplefilter("ignore")  # what matters reaches the report as the Item's warnings
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core for reading: no tokenizer threads beside torch's
    threading.Thread(target=_exit_with_parent, name="rag-reader-watch", daemon=True).start()
    from rag.splitting import Splitter, token_counter

    splitter = Splitter(token_counter(Path(config["model_dir"])), config["chunk_size"], config["chunk_overlap"])
    _reader["preparer"] = Preparer(splitter, config["load_options"], config["fingerprint"], config["empty_fingerprint"])
    _reader["events"] = events


def _exit_with_parent() -> None:
    """Exit the moment the ingest's process is gone (kill -9), not after the file being read."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _reader_probe() -> tuple[int, list[str]]:
    return os.getpid(), split_probe(_reader["preparer"].splitter)


def _read(seq: int, path: Path, old: FileRecord | None, st: os.stat_result) -> tuple[Item, int]:
    """One file's Item, and how many progress events were sent for it on the way."""
    preparer, events = _reader["preparer"], _reader["events"]
    sent = 0

    def on_page(source: str, done: int, total: int) -> None:
        nonlocal sent
        events.send((seq, (source, done, total)))
        sent += 1

    preparer.on_ocr_page = on_page
    item = preparer.prepare(path, old, st)
    return item, sent
