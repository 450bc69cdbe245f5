"""Ingest into a real Chroma store with the real embedding model."""

import os
import shutil

import pytest

from rag.storage.store import StoreError, chunk_id
from tests.conftest import DATA, DATA_INGESTED, DATA_PAGES, rag_with


@pytest.fixture
def folder(tmp_path):
    dst = tmp_path / "docs"
    shutil.copytree(DATA, dst)
    return dst


@pytest.fixture
def rag(tmp_path, embeddings):
    return rag_with(tmp_path / "store", embeddings)


def ids_of(rag, source):
    return sorted(rag.store.collection.get(where={"source": str(source)}, include=[])["ids"])


def test_ingest_folder_then_nothing_changes_on_rerun(rag, folder):
    first = rag.ingest(folder)
    assert len(first.ingested) == DATA_INGESTED and not first.failed
    assert first.pages == DATA_PAGES
    assert first.chunks == rag.store.count() > 100
    pdf_pages = {m["page"] for m in rag.store.collection.get(where={"source": str(folder / "R-FAQ.pdf")}, include=["metadatas"])["metadatas"]}
    assert pdf_pages == set(range(1, 53))  # every page has text, and keeps its number
    second = rag.ingest(folder)
    assert len(second.unchanged) == DATA_INGESTED and not second.ingested
    assert rag.store.count() == first.chunks  # no duplicates


def test_changed_file_is_replaced_and_touched_file_skipped(rag, folder):
    md = folder / "pypdf-encryption-decryption.md"
    rag.ingest(folder)
    before = rag.store.count()
    old_ids = ids_of(rag, md)
    # Touch without changing content: re-hashed, recognised, not re-embedded.
    os.utime(md, (1, 1))
    rep = rag.ingest(folder)
    assert str(md) in rep.unchanged and not rep.ingested
    # Shrink the file: its old chunks must all be gone, the new ones in.
    md.write_text("# Tiny\n\nThe secret word is pelican.\n", encoding="utf-8")
    rep = rag.ingest(folder)
    assert rep.ingested == [str(md)]
    new = rag.store.collection.get(where={"source": str(md)}, include=["documents"])
    assert new["documents"] == ["# Tiny\n\nThe secret word is pelican."]
    assert rag.store.count() == before - len(old_ids) + 1
    assert rag.store.manifest.get(str(md)).chunk_ids == [chunk_id(str(md), 0)]


def test_delete_and_prune(rag, folder):
    rag.ingest(folder)
    md = folder / "pypdf-encryption-decryption.md"
    n = len(ids_of(rag, md))
    assert rag.delete(md) == n > 0
    assert ids_of(rag, md) == [] and rag.store.manifest.get(str(md)) is None
    rag.ingest(folder)
    zh = folder / "zh" / "rust-installation.zh.md"
    zh.unlink()
    rep = rag.ingest(folder)  # without --prune the gone file stays
    assert ids_of(rag, zh)
    rep = rag.ingest(folder, prune=True)
    assert rep.pruned == [str(zh)] and ids_of(rag, zh) == []


def test_bad_and_missing_paths_do_not_stop_the_run(rag, folder, tmp_path):
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (folder / "empty.txt").write_bytes(b"")
    rep = rag.ingest(folder, tmp_path / "nope")
    assert len(rep.ingested) == DATA_INGESTED
    assert any("broken.pdf" in f for f in rep.failed)
    assert any("nope" in f and "no such file" in f for f in rep.failed)
    assert str(folder / "empty.txt") in rep.skipped
    assert all("\n" not in line for line in rep.failed + rep.warnings)


def test_interrupted_replace_is_redone(rag, folder):
    rag.ingest(folder)
    md = folder / "pypdf-encryption-decryption.md"
    expected = ids_of(rag, md)
    # Simulate a crash in the middle of a replace: manifest says pending, half the chunks are gone.
    rag.store.manifest.set_status(str(md), "pending")
    rag.store.collection.delete(ids=expected[: len(expected) // 2])
    rep = rag.ingest(folder)
    assert str(md) in rep.ingested
    assert ids_of(rag, md) == expected
    assert rag.store.manifest.get(str(md)).status == "done"


def test_second_writer_is_refused(rag, folder):
    with rag.store.writer():
        with pytest.raises(StoreError, match="another ingest"):
            rag.ingest(folder)


def test_a_served_store_refuses_other_writers(rag, folder, tmp_path, embeddings):
    """`rag serve` claims its embedded store; a writer holding another handle (as another process would) is
    refused, the server's own writer is not, and the claim ends with the server."""
    server = rag_with(rag.settings.store, embeddings)
    server.store.serve()
    with pytest.raises(StoreError, match="being served by `rag serve`"):
        rag.ingest(folder)
    with pytest.raises(StoreError, match="already served"):
        rag_with(rag.settings.store, embeddings).store.serve()
    assert len(server.ingest(folder).ingested) == DATA_INGESTED  # ingests through the server go in
    server.store.close()  # as the server's exit does
    assert len(rag.ingest(folder).unchanged) == DATA_INGESTED


def test_store_remembers_its_embedding_model(tmp_path, embeddings):
    (tmp_path / "a.md").write_text("Pelicans are large water birds with a pouch under the beak.\n")
    rag = rag_with(tmp_path / "store", embeddings)
    rag.ingest(tmp_path / "a.md")  # an empty store would take any model (embedding_model "auto"): this one holds vectors
    rag.store.close()
    other = rag_with(tmp_path / "store", embeddings, embedding_model=str(tmp_path))
    with pytest.raises(StoreError, match="built with embedding model"):
        other.store
