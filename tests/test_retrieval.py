"""Retrieval behaviour that the quality figures rest on (fusion by language, MMR), on a real store with the real
embedding model."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from rag.cli import main
from rag.retrieval.hybrid import HybridRetriever
from tests.conftest import rag_with

# Three near-copies of one passage, and two other passages that answer other sides of the same question.
NEST = ("Dalmatian pelicans nest in colonies on floating reed islands at Lake Prespa, where the water level in "
        "spring decides how many nests survive; each pair lays two eggs in {month}.")
TEXTS = {
    "nest-a.md": NEST.format(month="March"),
    "nest-b.md": NEST.format(month="April"),
    "nest-c.md": NEST.format(month="late March"),
    "diet.md": "Dalmatian pelicans feed on carp and eels, which both parents catch in shallow water and carry back "
               "to the young in the pouch.",
    "flight.md": "Pelicans from the Prespa colonies soar on thermals to reach feeding lakes up to 100 km away, "
                 "flapping only to climb out of the colony.",
    "rust.md": "rustup installs the Rust compiler and Cargo; run rustc --version to check the installation.",
    "zh.md": "Rust 的安装需要下载 rustup 工具。安装完成后，运行 rustc --version 检查编译器是否安装正确。",
}
QUESTION = "Where do Dalmatian pelicans nest?"
DUPLICATES = {"nest-a.md", "nest-b.md", "nest-c.md"}


@pytest.fixture(scope="module")
def pelicans(tmp_path_factory, embeddings):
    folder = tmp_path_factory.mktemp("pelicans")
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    rag = rag_with(tmp_path_factory.mktemp("store"), embeddings)
    report = rag.ingest(folder)
    assert not report.failed
    return rag


def names(docs):
    return [os.path.basename(d.metadata["source"]) for d in docs]


def test_mmr_replaces_near_duplicates(pelicans):
    plain = HybridRetriever(store=pelicans.store, embeddings=pelicans.embeddings, k=3).invoke(QUESTION)
    # Without MMR the three copies take every place: the situation MMR is for.
    assert set(names(plain)) == DUPLICATES
    diverse = HybridRetriever(store=pelicans.store, embeddings=pelicans.embeddings, k=3, mmr=True).invoke(QUESTION)
    assert len(diverse) == 3 and len({d.id for d in diverse}) == 3
    assert names(diverse)[0] == names(plain)[0]  # the most relevant passage still comes first
    assert len(DUPLICATES & set(names(diverse))) == 1  # one copy, and two passages that say something else
    assert {"diet.md", "flight.md"} <= set(names(diverse))
    assert all(0 < d.metadata["score"] <= 1 for d in diverse)  # the cosine similarity, as without MMR


def test_mmr_setting_reaches_the_retriever(pelicans, embeddings):
    rag = rag_with(pelicans.settings.store, embeddings, mmr=True, k=3)
    assert len(DUPLICATES & set(names(rag.retriever.invoke(QUESTION)))) == 1
    # per call, too
    assert set(names(rag.retriever.invoke(QUESTION, mmr=False))) == DUPLICATES


@pytest.mark.parametrize("flags, copies", [([], 3), (["--mmr"], 1)])
def test_mmr_flag_on_ask(pelicans, monkeypatch, tmp_path, flags, copies):
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAG_KEEP_ALIVE", "0")  # in process (the background server: test_daemon.py)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["ask", QUESTION, "--store", str(pelicans.settings.store), "--k", "3",
                                       "--model", "smollm2-135m", "--max-tokens", "8", "--show-context", *flags])
    assert result.exit_code == 0, result.output
    shown = result.output.split("\n\n", 1)[-1]  # the passages after the answer
    assert sum(shown.count(f"{name}") for name in DUPLICATES) == copies


def test_chinese_questions_rank_as_bm25_does(pelicans):
    # MiniLM reads Chinese mostly as [UNK]: in hybrid mode its list only orders what BM25 did not find.
    question = "如何检查 Rust 编译器是否安装正确？"
    kw = {"store": pelicans.store, "embeddings": pelicans.embeddings, "k": 5}
    hybrid = HybridRetriever(**kw).invoke(question)
    bm25 = HybridRetriever(**kw, mode="bm25").invoke(question)
    assert names(hybrid)[: len(bm25)] == names(bm25)
    assert names(hybrid)[0] == "zh.md"
    assert len(hybrid) == 5  # filled up from the dense list


def test_english_questions_fuse_both_lists(pelicans):
    # "soar on thermals" shares no word with the question but the meaning: only the dense list can find it.
    question = "Which birds glide on rising warm air?"
    kw = {"store": pelicans.store, "embeddings": pelicans.embeddings, "k": 2}
    assert HybridRetriever(**kw, mode="bm25").invoke(question) == []
    assert "flight.md" in names(HybridRetriever(**kw).invoke(question))
