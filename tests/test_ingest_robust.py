"""Ingest under abuse: every bad input of the shared corpus, kill -9 in the middle of a run, two ingests at
once. Real store in tmp_path, real embedding model, real child processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.ingest import discover
from rag.storage.store import StoreError
from tests.conftest import DATA, REPO, rag_with

# pdf_encrypted: which password opens which file (from ../shared/corpus/README.md).
PASSWORDS = {
    "r2-user-password.pdf": "asdfzxcv",
    "r4-aes-user-password.pdf": "asdfzxcv",
    "r6-user-password.pdf": "asdfzxcv",
    "crazyones-encrypted-256.pdf": "password",
    "libreoffice-writer-password.pdf": "openpassword",
    "unstructured-password.pdf": "password",  # "unknown" in the README; it is this one
}


def clean_env() -> dict[str, str]:
    """The environment without the developer's RAG_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


def outcome(report, files: list[Path]) -> dict[str, str]:
    """file -> the one list of the report it is in; fails if a file is in none or in several."""
    where: dict[str, list[str]] = {str(f): [] for f in files}
    for kind in ("ingested", "unchanged", "skipped"):
        for source in getattr(report, kind):
            where[source].append(kind)
    for line in report.failed:
        named = [s for s in where if line.startswith(s + ":")]
        assert len(named) == 1, f"failure line does not name exactly one file: {line!r}"
        where[named[0]].append("failed")
    for source, kinds in where.items():
        assert len(kinds) == 1, f"{source}: reported as {kinds or 'nothing'}"
    return {s: k[0] for s, k in where.items()}


# --- bad inputs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_store(shared, embeddings, tmp_path_factory):
    """All of ../shared/corpus/bad_inputs ingested once into a store: (rag, folder, files, first report)."""
    folder = shared / "bad_inputs"
    rag = rag_with(tmp_path_factory.mktemp("bad") / "store", embeddings)
    files, _ = discover([folder])
    report = rag.ingest(folder)  # must not raise
    return rag, folder, files, report


def test_bad_inputs_every_file_accounted_for_in_one_line(bad_store):
    rag, folder, files, report = bad_store
    kinds = outcome(report, files)
    assert report.files == len(files) >= 40
    for line in report.failed + report.warnings:
        assert "\n" not in line and line.strip() == line
        assert any(str(f) in line or f.name in line for f in files), f"names no file: {line!r}"
    # Readable text files of every odd encoding went in; junk that is not text did not.
    for name in ("utf-16-bom.txt", "utf-16-be.txt", "utf-32.txt", "latin1-umlauts.md", "cp1252.html"):
        assert kinds[str(folder / "text" / name)] == "ingested", name
    for name in ("empty.txt", "all-whitespace.txt"):
        assert kinds[str(folder / "text" / name)] == "skipped", name
    assert kinds[str(folder / "text" / "binary-gzip-named.txt")] == "failed"
    for name in ("invalid.pdf", "empty.pdf"):
        assert kinds[str(folder / "pdf_corrupt" / name)] == "failed", name
    # Every chunk in the store belongs to an ingested file; the manifest agrees with the collection.
    counts = Counter(m["source"] for m in rag.store.collection.get(include=["metadatas"])["metadatas"])
    manifest = {rec.source: rec.chunks for rec in rag.store.files()}
    assert set(counts) == {s for s, k in kinds.items() if k == "ingested"}
    assert all(manifest[s] == n for s, n in counts.items())
    assert report.chunks == sum(counts.values()) == rag.store.count()


def test_encrypted_pdfs_fail_with_a_password_message(bad_store):
    _, folder, _, report = bad_store
    enc = folder / "pdf_encrypted"
    for name in ["r2-user-password.pdf", "r4-aes-user-password.pdf", "crazyones-encrypted-256.pdf",
                 "libreoffice-writer-password.pdf", "unstructured-password.pdf"]:
        lines = [line for line in report.failed if line.startswith(str(enc / name) + ":")]
        assert len(lines) == 1 and "password" in lines[0].lower(), (name, lines)
    # An empty owner password opens these without asking (the r6 sample's owner password is empty).
    assert str(enc / "copy-protected-owner-only.pdf") in report.ingested
    assert str(enc / "r6-user-password.pdf") in report.ingested


def test_second_run_reports_everything_unchanged_and_remembers_failures(bad_store, tmp_path):
    rag, folder, files, first = bad_store
    second = rag.ingest(folder)
    kinds = outcome(second, files)
    failed_before = {s for s, k in outcome(first, files).items() if k == "failed"}
    # Everything is unchanged, the files that failed included: they are not read again (their failure is
    # remembered with their size and mtime) but still reported, one line each, with the reason.
    assert set(kinds.values()) == {"unchanged"}
    assert not second.ingested and not second.skipped and not second.failed and second.chunks == 0
    assert sorted(line.split(": ", 1)[0] for line in second.still_failing) == sorted(failed_before)
    assert all("not read again" in line for line in second.still_failing)
    assert rag.store.count() == first.chunks


def test_a_remembered_failure_is_retried_when_the_file_or_the_password_changes(embeddings, tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    target = own / "notes.txt"
    target.write_bytes(b"\x1f\x8b\x08\x00binary")  # gzip bytes under a text suffix: fails
    (own / "fine.md").write_text("# Fine\n\nThis one reads.\n", encoding="utf-8")
    rag = rag_with(tmp_path / "store", embeddings)
    assert len(rag.ingest(own).failed) == 1
    again = rag.ingest(own)
    assert not again.failed and again.still_failing[0].startswith(f"{target}: ") and sorted(again.unchanged) == sorted(
        [str(target), str(own / "fine.md")])
    # Other settings that could change the outcome (a password here) read it again.
    assert len(rag_with(tmp_path / "store", embeddings, password="x").ingest(own).failed) == 1
    target.write_text("Now it is text, and it goes in.", encoding="utf-8")
    fixed = rag.ingest(own)
    assert fixed.ingested == [str(target)] and not fixed.still_failing and not fixed.failed
    assert not rag.store.failures()  # forgotten once it reads fine
    target.unlink()
    target.write_bytes(b"\x1f\x8b\x08\x00binary again")
    rag.ingest(own)
    target.unlink()
    pruned = rag.ingest(own, prune=True)
    assert pruned.pruned == [str(target)] and not rag.store.failures()


def test_cli_ingest_of_bad_inputs_exits_3_with_a_summary(bad_store, monkeypatch, tmp_path):
    from rag.cli import main

    rag, folder, files, first = bad_store
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no rag.toml
    result = CliRunner().invoke(main, ["ingest", str(folder), "--store", str(rag.settings.store), "--quiet"])
    assert result.exit_code == 3, result.output
    n_failed = len(first.failed)
    assert f"{len(files)} files: 0 ingested, {len(files)} unchanged ({n_failed} of them still failing), 0 skipped, 0 failed" in result.stdout
    failed_lines = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) == n_failed


def test_encrypted_pdfs_open_with_their_password(shared, embeddings, tmp_path):
    enc = shared / "bad_inputs" / "pdf_encrypted"
    folder = tmp_path / "enc"
    folder.mkdir()
    for name in PASSWORDS:
        shutil.copy2(enc / name, folder / name)
    rag = rag_with(tmp_path / "store", embeddings, password="asdfzxcv")
    first = rag.ingest(folder)
    opened = {str(folder / n) for n, pw in PASSWORDS.items() if pw == "asdfzxcv"}
    assert set(first.ingested) == opened
    assert all("password" in line.lower() for line in first.failed) and len(first.failed) == 3
    # Another password: the files it opens go in, the ones already in are unchanged, the rest fail again.
    again = rag_with(tmp_path / "store", embeddings, password="password").ingest(folder)
    assert set(again.ingested) == {str(folder / n) for n, pw in PASSWORDS.items() if pw == "password"}
    assert set(again.unchanged) == opened
    assert len(again.failed) == 1 and again.failed[0].startswith(str(folder / "libreoffice-writer-password.pdf"))


# --- kill -9 or Ctrl-C in the middle of an ingest ----------------------------------------------------------
@pytest.fixture(scope="module")
def kill_folder(tmp_path_factory) -> Path:
    """Several files: real documents (a few from ../shared/corpus/docs/en, else data/) and generated text, so
    that a run takes long enough to be killed in the middle and has many files to be killed between."""
    folder = tmp_path_factory.mktemp("kill") / "docs"
    shared_en = REPO.parent / "shared" / "corpus" / "docs" / "en"
    if shared_en.is_dir():
        folder.mkdir()
        for name in ("R-FAQ.pdf", "R-data.pdf", "doj-ch13-trustee-handbook-1p.docx"):
            shutil.copy2(shared_en / name, folder / name)
        shutil.copytree(shared_en / "pypdf-docs", folder / "pypdf-docs")
    else:
        shutil.copytree(DATA, folder)
    for i in range(8):
        lines = [f"Section {i}.{j}: the {j}th remark of generated note {i} is about topic {i * 31 + j}." for j in range(120)]
        (folder / f"note-{i:02d}.md").write_text(f"# Note {i}\n\n" + "\n\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def clean_counts(kill_folder, embeddings, tmp_path_factory) -> dict[str, int]:
    """Chunks per file of a clean, uninterrupted ingest of `kill_folder`."""
    rag = rag_with(tmp_path_factory.mktemp("clean") / "store", embeddings)
    report = rag.ingest(kill_folder)
    assert not report.failed and len(report.ingested) >= 10
    return dict(Counter(m["source"] for m in rag.store.collection.get(include=["metadatas"])["metadatas"]))


# An ingest in a child process that prints a line after each file it commits and, at the moment the test names
# (after the n-th committed file, or halfway through writing the n-th file's chunks), says "stopped ..." and
# waits for a line on stdin: the test kills it there, or lets it go on. The test acts on these lines, not on
# the clock.
CHILD = r"""
import sys

import chromadb

from rag import RAG

store, folder, stop = sys.argv[1], sys.argv[2], sys.argv[3].split()  # stop: "file N", "write N" or "never"
counts = {"file": 0, "write": 0}


def wait_here(line):
    print(line, flush=True)
    sys.stdin.readline()


def progress(event, value):
    if event == "file":
        counts["file"] += 1
        print(f"committed {value}", flush=True)
        if stop == ["file", str(counts["file"])]:
            wait_here(f"stopped after {value}")


upsert = chromadb.Collection.upsert


def upsert_or_stop(self, ids, embeddings=None, metadatas=None, documents=None, **rest):
    counts["write"] += 1
    if stop == ["write", str(counts["write"])]:  # inside Store.replace_file: the file is 'pending'
        half = len(ids) // 2
        upsert(self, ids=ids[:half], embeddings=embeddings[:half], metadatas=metadatas[:half], documents=documents[:half])
        wait_here(f"stopped writing {metadatas[0]['source']}")
    upsert(self, ids=ids, embeddings=embeddings, metadatas=metadatas, documents=documents, **rest)


chromadb.Collection.upsert = upsert_or_stop
RAG(store=store).ingest(folder, progress=progress)
"""


class Ingest:
    """The ingest child process (in a session of its own, as a terminal's job is) and the lines it printed."""

    def __init__(self, store: Path, folder: Path, cwd: Path, stop: str = "never") -> None:
        self.errors = cwd / "ingest-stderr.txt"
        with self.errors.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(folder), stop], cwd=cwd,
                                         env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True, start_new_session=True)
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 600) -> str:
        """The child's next line that starts with `prefix`. The timer that kills the child after `timeout` s is
        only a safety net: the line comes, or the child ends and the read sees the end of its output."""
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith(prefix):
                    return self.lines[-1]
        finally:
            timer.cancel()
        pytest.fail(f"the ingest ended (code {self.proc.wait()}) before {prefix!r}: {self.errors.read_text()[-2000:]}")

    def committed(self) -> set[str]:
        return {line.split(" ", 1)[1] for line in self.lines if line.startswith("committed ")}


def manifest_rows(store: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(f"file:{store / 'manifest.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT source, status, chunks FROM files").fetchall()


def reader_children(parent: int | None = None) -> list[int]:
    """Pids of the reader processes (multiprocessing's spawned workers) whose parent is `parent` (default: this
    process)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def still_running(pids: list[int], timeout: float = 120) -> list[int]:
    """Wait for each process to exit (its pidfd becomes readable then); the ones still running after `timeout`
    s without any exiting, a safety net only."""
    fds = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone
            fds[os.pidfd_open(pid)] = pid
    running = set(fds)
    try:
        while running:
            exited, _, _ = select.select(list(running), [], [], timeout)
            if not exited:
                break
            running -= set(exited)
        return sorted(fds[fd] for fd in running)
    finally:
        for fd in fds:
            os.close(fd)


def assert_consistent(rag, expected: dict[str, int]) -> None:
    """No pending rows, no duplicates, Chroma agrees with the manifest, and both with a clean ingest."""
    records = {rec.source: rec for rec in rag.store.files()}
    assert all(rec.status == "done" for rec in records.values())
    got = rag.store.collection.get(include=["metadatas", "documents"])
    keys = [(m["source"], m["chunk"]) for m in got["metadatas"]]
    assert len(keys) == len(set(keys)), "two chunks with the same (source, chunk index)"
    assert len(got["ids"]) == len(set(got["ids"]))
    per_source = Counter(m["source"] for m in got["metadatas"])
    assert dict(per_source) == expected
    assert {s: rec.chunks for s, rec in records.items()} == expected
    for source, rec in records.items():
        assert sorted(rec.chunk_ids) == sorted(i for i, m in zip(got["ids"], got["metadatas"]) if m["source"] == source)
    assert rag.store.count() == sum(expected.values())


@pytest.mark.parametrize("moment", ["first file done", "half the files done", "a file pending", "Ctrl-C"])
def test_killed_or_interrupted_in_the_middle_then_rerun_completes(moment, kill_folder, clean_counts, embeddings, tmp_path):
    store = tmp_path / "store"
    n = len(clean_counts)
    stop = {"first file done": "file 1", "half the files done": f"file {n // 2}", "a file pending": "write 3",
            "Ctrl-C": "file 2"}[moment]
    ingest = Ingest(store, kill_folder, tmp_path, stop)
    stopped = ingest.wait_for("stopped ")
    readers = reader_children(ingest.proc.pid)
    assert len(readers) == 1, "files are read in a reader process"
    if moment == "Ctrl-C":
        os.killpg(ingest.proc.pid, signal.SIGINT)  # as the terminal does: to the ingest and its reader
        assert ingest.proc.wait(timeout=600) != 0
        errors = ingest.errors.read_text()  # one traceback, the interrupt's: it stopped there, nowhere else
        assert errors.count("Traceback") == 1 and "\nKeyboardInterrupt\n" in errors, errors[-2000:]
    else:
        ingest.proc.kill()
        ingest.proc.wait()
    assert still_running(readers) == [], "the reader process outlived the ingest"
    seen = manifest_rows(store)
    assert {s for s, status, _ in seen if status == "done"} == ingest.committed()
    pending = [s for s, status, _ in seen if status == "pending"]
    assert pending == ([stopped.removeprefix("stopped writing ")] if moment == "a file pending" else [])
    assert 0 < len(seen) < n
    rag = rag_with(store, embeddings)
    report = rag.ingest(kill_folder)
    assert not report.failed, report.failed
    assert ingest.committed() <= set(report.unchanged) and set(pending) <= set(report.ingested)
    assert_consistent(rag, clean_counts)
    assert not rag.ingest(kill_folder).ingested  # and the store is settled: nothing to do a third time


def test_two_ingests_at_once_never_interleave(kill_folder, clean_counts, embeddings, tmp_path):
    store = tmp_path / "store"
    ingest = Ingest(store, kill_folder, tmp_path, "file 1")
    ingest.wait_for("stopped ")  # it holds the write lock (taken before its first file)
    with (store / "write.lock").open("a+") as fh:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rag = rag_with(store, embeddings)
    with pytest.raises(StoreError, match="another ingest is writing"):
        rag.ingest(kill_folder)
    ingest.proc.communicate("go on\n", timeout=600)
    assert ingest.proc.returncode == 0, ingest.errors.read_text()[-2000:]
    assert_consistent(rag, clean_counts)


# --- a reader process that dies -----------------------------------------------------------------------------
# A FIFO with a text suffix: reading it blocks like a parser stuck on a hostile file. The test opens the
# FIFO's writing end, and that open returns exactly when the reader has opened it: then the test SIGKILLs the
# reader process, as the OOM killer would, or (when the file is read in a thread) writes the file's text.
def feed_fifo(fifo: Path, kill_reader: bool, text: bytes = b"", earlier: frozenset[int] = frozenset()) -> list[int]:
    """Open `fifo` for writing once the ingest reads it; SIGKILL the reader process, or write `text`. Returns the
    reader processes there were at that moment."""
    # Only a safety net: should the ingest never open the FIFO, this opens it so that the test's open returns.
    unblock = threading.Timer(300, lambda: os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)))
    unblock.start()
    try:
        writer = os.open(fifo, os.O_WRONLY)
    finally:
        unblock.cancel()
    try:
        # Readers this process had before the ingest began (another test's, in a full run) are not this one's.
        readers = [pid for pid in reader_children() if pid not in earlier]
        if kill_reader:
            assert len(readers) == 1, readers
            os.kill(readers[0], signal.SIGKILL)
        else:
            os.write(writer, text)
        return readers
    finally:
        os.close(writer)


def crashed(path: Path) -> str:
    return f"{path}: reading it crashed the reader process (killed by signal SIGKILL"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_file_that_kills_the_reader_fails_alone_and_the_run_goes_on(embeddings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.md", "c.md", "d.md"):
        (folder / name).write_text(f"# {name}\n\nThe file {name} says hello.\n", encoding="utf-8")
    os.mkfifo(folder / "b.txt")
    rag = rag_with(tmp_path / "store", embeddings)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(report=rag.ingest(folder)), daemon=True)
    worker.start()
    try:
        feed_fifo(folder / "b.txt", kill_reader=True)
    finally:
        worker.join(timeout=300)
    assert not worker.is_alive()
    report = result["report"]
    assert report.ingested == [str(folder / n) for n in ("a.md", "c.md", "d.md")]
    assert len(report.failed) == 1 and report.failed[0].startswith(crashed(folder / "b.txt"))
    assert reader_children() == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_after_three_reader_crashes_the_rest_is_read_in_a_thread(embeddings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# a\n\nThe first file.\n", encoding="utf-8")
    (folder / "z.md").write_text("# z\n\nThe last file.\n", encoding="utf-8")
    fifos = [folder / f"b{i}.txt" for i in range(1, 5)]
    for fifo in fifos:
        os.mkfifo(fifo)
    rag = rag_with(tmp_path / "store", embeddings)
    result: dict = {}
    earlier = frozenset(reader_children())
    worker = threading.Thread(target=lambda: result.update(report=rag.ingest(folder)), daemon=True)
    worker.start()
    try:
        for fifo in fifos[:3]:
            feed_fifo(fifo, kill_reader=True, earlier=earlier)
        text = b"Read by a thread after three crashes."
        # No reader process: hashed in a thread, then loaded there.
        assert feed_fifo(fifos[3], kill_reader=False, text=text, earlier=earlier) == []
        feed_fifo(fifos[3], kill_reader=False, text=text, earlier=earlier)
    finally:
        worker.join(timeout=300)
    assert not worker.is_alive()
    report = result["report"]
    assert report.ingested == [str(folder / "a.md"), str(fifos[3]), str(folder / "z.md")]
    assert [line[: len(crashed(f))] for line, f in zip(report.failed, fifos)] == [crashed(f) for f in fifos[:3]]
    assert len(report.failed) == 3
    assert set(reader_children()) <= earlier
