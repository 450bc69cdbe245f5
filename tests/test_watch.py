"""`rag watch`: a real `rag watch` subprocess over a real store (the packaged embedder), driven by writing files
and waiting for the line it prints per batch: create, modify, rename and move (relabelled, nothing embedded),
delete, editors' temporary files, a burst in one batch, Ctrl-C, kill -9 mid-batch then a restart, and a warm
background server answering from a file the watcher ingested."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from rag.daemon.lifecycle import running
from rag.storage.chroma import chunk_id, forget_open_stores
from rag.storage.manifest import MANIFEST_NAME, Manifest
from tests.conftest import make_settings
from tests.test_daemon import DOCS, KEEPER, NEW_DOC, TELESCOPE

EXE = Path(sys.executable).with_name("rag")
WAIT = 600  # seconds: a generous bound for one batch on a loaded machine; the tests wait on lines, not on time
SUMMARY = re.compile(r"(\d+) files in [\d.]+ s: (\d+) ingested, (\d+) unchanged, (\d+) relabelled, (\d+) deleted, "
                     r"(\d+) failed; (\d+) chunks embedded")
FIELDS = ("files", "ingested", "unchanged", "relabelled", "deleted", "failed", "embedded")
# Editors' and downloaders' files that must never reach the store (~$ is MS Office's lock file: a .docx that
# would fail to read).
TEMP_FILES = [".notes.md.swp", ".notes.md.swx", "notes.md~", "4913", ".#notes.md", ".~lock.notes.md#",
              "notes.md.tmp", "paper.pdf.part", "paper.pdf.crdownload", "~$report.docx", ".hidden.md"]


class Watch:
    """A `rag watch` subprocess; its stdout lines are read into a queue by a thread."""

    def __init__(self, folder: Path, store: Path, cache: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        self.env.update(RAG_CACHE_DIR=str(cache), RAG_STORE=str(store), RAG_EMBEDDING_BACKEND="torch",
                        RAG_MODEL="smollm2-135m", RAG_MAX_TOKENS="32", RAG_N_THREADS="1", RAG_KEEP_ALIVE="3600")
        self.folder, self.store, self.cache = folder.resolve(), store, cache
        # Ctrl-C as in a terminal: a runner that ignores SIGINT would hand that on, and Python would never raise it.
        self.proc = subprocess.Popen([str(EXE), "watch", str(folder), "--debounce", "1"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=self.env,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_batch(self, prefix: str = "batch: ") -> tuple[dict[str, int], list[str]]:
        """The next batch's counts, and the lines printed before it (progress lines)."""
        before = []
        while True:
            line = self.lines.get(timeout=WAIT)
            assert line is not None, f"rag watch ended: {self.proc.wait()} {self.proc.stderr.read()[-3000:]}"
            if line.startswith(prefix):
                return dict(zip(FIELDS, map(int, SUMMARY.search(line).groups()), strict=True)), before
            before.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def counts(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in FIELDS}


def snapshot(store: Path, folder: Path) -> dict[str, tuple[str, list[str], list[str], list[list[float]]]]:
    """The store as a fresh process would see it: file name -> (status, chunk ids, texts, vectors)."""
    from rag.api import RAG

    forget_open_stores()  # read what the watcher wrote, not this process's cached view
    rag = RAG(make_settings(store))
    try:
        out = {}
        for rec in rag.store.files():
            got = rag.store.vectors(rec.chunk_ids)
            out[Path(rec.source).relative_to(folder).as_posix()] = (
                rec.status, rec.chunk_ids, [got[c][0] for c in rec.chunk_ids], [got[c][2] for c in rec.chunk_ids])
        assert rag.store.count() == sum(len(ids) for _, ids, _, _ in out.values())  # no chunk outside the manifest
        return out
    finally:
        rag.store.close()


def bm25(store: Path, word: str) -> set[str]:
    """The files whose chunks BM25 finds for `word`, from the index on disk."""
    from rag.api import RAG

    forget_open_stores()
    rag = RAG(make_settings(store))
    try:
        hits = [cid for cid, _ in rag.store.lexical().search(word, 10)]
        return {Path(meta["source"]).name for _, meta, _ in rag.store.get(hits).values()}
    finally:
        rag.store.close()


@pytest.fixture(scope="module")
def watching(tmp_path_factory):
    """`rag watch` over a folder holding DOCS, after its first sync; its own cache folder (background servers)."""
    root = Path(tempfile.mkdtemp(prefix="ragw-"))  # short: the background server's socket path holds 107 bytes
    folder = root / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    watch = Watch(folder, root / "store", root / "c")
    try:
        assert watch.next_batch("synced ")[0] == counts(files=2, ingested=2, embedded=2)
        yield watch
    finally:
        watch.stop()
        subprocess.run([str(EXE), "stop", "--all"], env=watch.env, capture_output=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


def ask(watch: Watch, question: str) -> dict:
    out = subprocess.run([str(EXE), "ask", question, "--json"], capture_output=True, text=True, env=watch.env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def server(watch: Watch) -> dict:
    rows = running(watch.cache)
    assert len(rows) == 1, rows
    return rows[0]


def test_a_warm_server_answers_from_a_file_the_watcher_ingested(watching):
    ask(watching, KEEPER)  # starts the background server over the store
    warm = server(watching)
    (watching.folder / NEW_DOC[0]).write_text(NEW_DOC[1], encoding="utf-8")
    assert watching.next_batch()[0] == counts(files=1, ingested=1, embedded=1)
    answer = ask(watching, TELESCOPE)
    assert "Jonas Pell" in answer["answer"] and {Path(s["source"]).name for s in answer["sources"]} == {NEW_DOC[0]}
    after = server(watching)
    assert (after["pid"], after["store_reopened"]) == (warm["pid"], 1)


def test_create_modify_rename_move_delete(watching):
    there = sorted(snapshot(watching.store, watching.folder))
    notes = watching.folder / "notes.md"
    notes.write_text("Quillwort grows in the shallow pond behind the mill.", encoding="utf-8")
    assert watching.next_batch()[0] == counts(files=1, ingested=1, embedded=1)
    assert bm25(watching.store, "quillwort") == {"notes.md"}

    notes.write_text("Bladderwort floats in the shallow pond behind the mill.", encoding="utf-8")
    assert watching.next_batch()[0] == counts(files=1, ingested=1, embedded=1)
    before = snapshot(watching.store, watching.folder)["notes.md"]
    assert before[2] == ["Bladderwort floats in the shallow pond behind the mill."]
    assert (bm25(watching.store, "quillwort"), bm25(watching.store, "bladderwort")) == (set(), {"notes.md"})

    # A rename, then a move into a new folder: the chunks follow, texts and vectors as they were, nothing embedded.
    notes.rename(watching.folder / "pond.md")
    assert watching.next_batch()[0] == counts(files=1, relabelled=1)
    (watching.folder / "plants").mkdir()
    (watching.folder / "pond.md").rename(watching.folder / "plants" / "pond.md")
    assert watching.next_batch()[0] == counts(files=1, relabelled=1)
    state = snapshot(watching.store, watching.folder)
    moved = watching.folder / "plants" / "pond.md"
    assert sorted(state) == sorted([*there, "plants/pond.md"])
    assert state["plants/pond.md"] == ("done", [chunk_id(str(moved), 0)], before[2], before[3])
    assert bm25(watching.store, "bladderwort") == {"pond.md"}

    moved.unlink()
    assert watching.next_batch()[0] == counts(deleted=1)
    assert sorted(snapshot(watching.store, watching.folder)) == there
    assert bm25(watching.store, "bladderwort") == set()


def test_editor_temporary_files_are_ignored(watching):
    there = sorted(snapshot(watching.store, watching.folder))
    for name in TEMP_FILES:
        (watching.folder / name).write_text("Sundew traps insects.", encoding="utf-8")
    (watching.folder / "marker.md").write_text("Sundew traps insects on its sticky leaves.", encoding="utf-8")
    # Had any temporary file been taken, this batch (or one before it) would count it.
    assert watching.next_batch()[0] == counts(files=1, ingested=1, embedded=1)
    assert sorted(snapshot(watching.store, watching.folder)) == sorted([*there, "marker.md"])


def test_a_burst_is_one_batch_with_progress(watching):
    burst = watching.folder / "burst"
    burst.mkdir()
    for i in range(200):
        (burst / f"note{i:03d}.md").write_text(f"Note {i}: the heron number {i} waits at the weir.", encoding="utf-8")
    batch, before = watching.next_batch()
    assert batch == counts(files=200, ingested=200, embedded=200)
    assert before == [f"  {n}/200 files" for n in range(20, 201, 20)]
    assert sum(name.startswith("burst/") for name in snapshot(watching.store, watching.folder)) == 200


def test_ctrl_c_exits_130(watching):
    watching.proc.send_signal(signal.SIGINT)
    assert watching.proc.wait(120) == 130
    assert watching.proc.stderr.read().strip().splitlines()[-1:] == ["interrupted"]


def test_kill_9_mid_batch_then_a_restart_completes_it(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    watch = Watch(folder, tmp_path / "store", tmp_path / "c")
    try:
        assert watch.next_batch("synced ")[0] == counts()
        for i in range(200):
            (folder / f"f{i:03d}.md").write_text(f"File {i} tells of otter{i} by the sluice.", encoding="utf-8")
        while not re.fullmatch(r"  \d+/\d+ files", watch.lines.get(timeout=WAIT)):  # the batch is under way
            pass
        watch.proc.kill()
        watch.proc.wait()
        manifest = Manifest(watch.store / MANIFEST_NAME)
        left = [rec for rec in manifest.all() if rec.status == "done"]
        manifest.close()
        assert 1 <= len(left) < 200  # killed mid-batch (perhaps a file half-written: 'pending')
        watch = Watch(folder, tmp_path / "store", tmp_path / "c")
        synced = watch.next_batch("synced ")[0]
        # What the killed run committed stays; the rest (and a file it left half-written) goes in now.
        assert synced["files"] == 200 and synced["ingested"] == 200 - synced["unchanged"] >= 200 - len(left)
        state = snapshot(watch.store, watch.folder)
        assert sorted(state) == [f"f{i:03d}.md" for i in range(200)]
        assert {status for status, *_ in state.values()} == {"done"}
        # The BM25 side too: a file the killed run committed, and the last one, which the restart did.
        assert (bm25(watch.store, "otter0"), bm25(watch.store, "otter199")) == ({"f000.md"}, {"f199.md"})
    finally:
        watch.stop()
