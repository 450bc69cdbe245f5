"""Ingest under abuse: every bad input of the shared corpus, kill -9 in the middle of a run, two ingests at
once. Real store in tmp_path, real embedding model, real child processes."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
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
    assert not rag.store.manifest.failures()  # forgotten once it reads fine
    target.unlink()
    target.write_bytes(b"\x1f\x8b\x08\x00binary again")
    rag.ingest(own)
    target.unlink()
    pruned = rag.ingest(own, prune=True)
    assert pruned.pruned == [str(target)] and not rag.store.manifest.failures()


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


# --- kill -9 in the middle of an ingest ---------------------------------------------------------------------
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


def start_ingest(store: Path, folder: Path, cwd: Path) -> subprocess.Popen:
    code = "import sys, rag; from rag import RAG; RAG(store=sys.argv[1]).ingest(sys.argv[2])"
    return subprocess.Popen([sys.executable, "-c", code, str(store), str(folder)], cwd=cwd, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def manifest_rows(store: Path) -> list[tuple[str, str, int]]:
    path = store / "manifest.sqlite3"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT source, status, chunks FROM files").fetchall()
    except sqlite3.Error:  # created but no table yet, or busy
        return []


def kill_when(proc: subprocess.Popen, store: Path, ready, timeout: float = 600) -> list[tuple[str, str, int]]:
    """SIGKILL `proc` as soon as `ready(rows)` holds for its manifest; returns the rows seen then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = manifest_rows(store)
        if ready(rows):
            assert proc.poll() is None, "the ingest finished before it could be killed: make the folder bigger"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return rows
        if proc.poll() is not None:
            pytest.fail(f"the ingest ended (code {proc.returncode}) before it was killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("the ingest never got far enough to be killed")


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


@pytest.mark.parametrize("moment", ["first file done", "half the files done", "a file pending"])
def test_kill_9_in_the_middle_then_rerun_completes(moment, kill_folder, clean_counts, embeddings, tmp_path):
    store = tmp_path / "store"
    n = len(clean_counts)
    ready = {
        "first file done": lambda rows: sum(s == "done" for _, s, _ in rows) >= 1,
        "half the files done": lambda rows: sum(s == "done" for _, s, _ in rows) >= n // 2,
        # Killed inside Store.replace_file when the poll catches one; else soon after.
        "a file pending": lambda rows: any(s == "pending" for _, s, _ in rows) or sum(s == "done" for _, s, _ in rows) >= 3,
    }[moment]
    proc = start_ingest(store, kill_folder, tmp_path)
    seen = kill_when(proc, store, ready)
    assert 0 < len(seen) < n + 1
    rag = rag_with(store, embeddings)
    report = rag.ingest(kill_folder)
    assert not report.failed, report.failed
    done_before = {s for s, status, _ in seen if status == "done"}
    assert done_before <= set(report.unchanged) | set(report.ingested)
    assert_consistent(rag, clean_counts)
    assert not rag.ingest(kill_folder).ingested  # and the store is settled: nothing to do a third time


def test_two_ingests_at_once_never_interleave(kill_folder, clean_counts, embeddings, tmp_path):
    store = tmp_path / "store"
    proc = start_ingest(store, kill_folder, tmp_path)
    # Wait until the child holds the write lock (it takes it before its first file).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not manifest_rows(store):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    with (store / "write.lock").open("a+") as fh:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rag = rag_with(store, embeddings)
    with pytest.raises(StoreError, match="another ingest is writing"):
        rag.ingest(kill_folder)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    assert_consistent(rag, clean_counts)


# --- a reader process that dies -----------------------------------------------------------------------------
def reader_children() -> list[int]:
    """Pids of this process's reader children."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"reader_main" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_file_that_kills_the_reader_fails_alone_and_the_run_goes_on(embeddings, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.md", "c.md", "d.md"):
        (folder / name).write_text(f"# {name}\n\nThe file {name} says hello.\n", encoding="utf-8")
    # A FIFO with a text suffix: reading it blocks forever, like a parser stuck on a hostile file; the test
    # then SIGKILLs the reader, as the OOM killer would.
    os.mkfifo(folder / "b.txt")
    rag = rag_with(tmp_path / "store", embeddings)
    result: dict = {}
    import threading

    worker = threading.Thread(target=lambda: result.update(report=rag.ingest(folder)))
    worker.start()
    deadline = time.monotonic() + 300
    killed = False
    try:
        while time.monotonic() < deadline and worker.is_alive() and not killed:
            for pid in reader_children():
                try:
                    stuck = Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner"  # blocked opening the FIFO
                except OSError:
                    stuck = False
                if stuck:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
            time.sleep(0.05)
        worker.join(timeout=300)
    finally:
        try:  # whatever happened, never leave a reader blocked on the FIFO
            os.close(os.open(folder / "b.txt", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert killed and not worker.is_alive()
    report = result["report"]
    assert report.ingested == [str(folder / n) for n in ("a.md", "c.md", "d.md")]
    assert len(report.failed) == 1
    assert report.failed[0].startswith(f"{folder / 'b.txt'}: reading it crashed the reader process (killed by signal SIGKILL")
    assert reader_children() == []
