"""The store keeps its BM25 index current file by file: ingests, re-ingests, deletes and prunes through RAG update it
without reading Chroma again, and it then scores exactly as an index built afresh from what Chroma holds; another
process opens it as it is; a kill -9 in the middle of a file's commit leaves a stale index that the next run
rebuilds once."""

import json
import shutil
import subprocess
import sys

import pytest

from rag.storage.lexical import LexicalIndex
from tests.conftest import DATA, REPO, rag_with

QUERIES = ["pelicans", "rustup 安装", "encrypt a PDF with a password", "gull pier", "如何安装 Rust 编译器", "cargo"]


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    (folder / "zh").mkdir(parents=True)
    shutil.copy(DATA / "pypdf-encryption-decryption.md", folder)
    shutil.copy(DATA / "zh" / "rust-installation.zh.md", folder / "zh")
    (folder / "birds.txt").write_text("Pelicans fly over the sea. Pelicans have a pouch under the beak.\n")
    return folder


def chroma_contents(rag) -> tuple[list[str], list[str]]:
    got = rag.store.collection.get(include=["documents"])
    return got["ids"], got["documents"]


def assert_matches_chroma(rag, tmp_path) -> None:
    """The store's index gives the same hits and scores as one built now from every chunk in Chroma."""
    ids, texts = chroma_contents(rag)
    fresh = LexicalIndex(tmp_path / "fresh-bm25")
    fresh.build(ids, texts, "fresh")
    index = rag.store.lexical()
    assert len(index) == len(ids)
    for q in QUERIES:
        got, want = index.search(q, k=1000), fresh.search(q, k=1000)
        assert [c for c, _ in got] == [c for c, _ in want], q
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6), q


def test_ingest_replace_delete_and_prune_update_the_index_without_reading_chroma(docs, tmp_path, embeddings):
    rag = rag_with(tmp_path / "store", embeddings)
    assert len(rag.ingest(docs).ingested) == 3
    assert_matches_chroma(rag, tmp_path)
    birds = str(docs / "birds.txt")
    birds_ids = next(rec.chunk_ids for rec in rag.files() if rec.source == birds)
    assert [c for c, _ in rag.store.lexical().search("pelicans", k=5)] == birds_ids

    (docs / "birds.txt").write_text("Gulls and pelicans rest on the pier.\n")  # replaced
    (docs / "more.md").write_text("# Gulls\n\nA gull is a sea bird.\n")  # added
    report = rag.ingest(docs)
    assert sorted(report.ingested) == [birds, str(docs / "more.md")]
    assert_matches_chroma(rag, tmp_path)
    assert rag.store.lexical().search("pouch beak", k=5) == []  # the old text is gone

    assert rag.delete(str(docs / "zh" / "rust-installation.zh.md")) > 0
    assert_matches_chroma(rag, tmp_path)
    assert rag.store.lexical().search("rustup 安装", k=5) == []

    (docs / "more.md").unlink()
    assert rag.ingest(docs, prune=True).pruned == [str(docs / "more.md")]
    assert_matches_chroma(rag, tmp_path)
    assert len(rag.store.lexical()) == rag.store.count()
    assert rag.store.lexical_rebuilds == 0  # never read back from Chroma: every change updated it in place


CHILD = """
import json, sys
from rag import privacy
privacy.apply()
from rag.api import RAG
from rag.config import Settings
rag = RAG(Settings.load(config_file=None, env={}, overrides={"store": sys.argv[1]}))
index = rag.store.lexical()
print(json.dumps({"rebuilds": rag.store.lexical_rebuilds, "hits": {q: index.search(q, k=100) for q in sys.argv[2:]}}))
"""


def test_another_process_opens_the_index_as_it_is(docs, tmp_path, embeddings):
    rag = rag_with(tmp_path / "store", embeddings)
    rag.ingest(docs)
    rag.delete(str(docs / "birds.txt"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "store"), *QUERIES], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rebuilds"] == 0
    assert got["hits"] == {q: [[c, s] for c, s in rag.store.lexical().search(q, k=100)] for q in QUERIES}
    zh = next(rec for rec in rag.files() if rec.source.endswith("rust-installation.zh.md"))
    assert got["hits"]["pelicans"] == []  # birds.txt was deleted
    hits = [c for c, _ in got["hits"]["rustup 安装"]]
    assert set(hits) <= set(zh.chunk_ids) and (len(hits), len(zh.chunk_ids)) == (11, 14)


# Ingests `docs` and dies (SIGKILL, as kill -9) right after the BM25 index took the second file, before the
# manifest says so: the index is then one file ahead of the store.
CRASH = """
import os, signal, sys
from rag import privacy
privacy.apply()
from rag.api import RAG
from rag.config import Settings
from rag.storage import lexical

update, seen = lexical.LexicalIndex.update, []

def update_then_die(self, remove, ids, *rest, **kw):
    update(self, remove, ids, *rest, **kw)
    seen.append(len(ids))
    if len(seen) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

lexical.LexicalIndex.update = update_then_die
# MiniLM named: the docs hold Chinese, so "auto" would choose multilingual-e5-small, and the test's own RAG (given the
# session's MiniLM) could not open the store.
RAG(Settings.load(config_file=None, env={}, overrides={"store": sys.argv[1], "embedding_model": "all-MiniLM-L6-v2"})).ingest(sys.argv[2])
"""


def test_a_kill_between_the_index_and_the_manifest_is_repaired_by_the_next_run(docs, tmp_path, embeddings):
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-c", CRASH, str(store), str(docs)], capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert out.returncode == -9, out.stderr[-3000:]
    rag = rag_with(store, embeddings)
    assert [rec.status for rec in rag.files()] == ["done", "pending"]
    report = rag.ingest(docs)
    assert len(report.ingested) == 2 and not report.failed
    assert rag.store.lexical_rebuilds == 1  # the stale index rebuilt once from Chroma, then kept current
    assert_matches_chroma(rag, tmp_path)
    assert [rec.status for rec in rag.files()] == ["done"] * 3
