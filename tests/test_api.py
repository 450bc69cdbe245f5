"""The Python API and the LangChain Runnable, end to end with real models (small model unless marked slow)."""

import asyncio
import re
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda

from rag import RAG, Answer
from tests.conftest import make_settings

ABOUT_R = re.compile(r"\bR\b")  # the language's name as a word


def ids(docs) -> list[str]:
    return [d.id for d in docs]


def retrieved(rag, question: str) -> list[str]:
    return ids(rag.retriever.invoke(question))


def test_retriever_is_a_langchain_retriever_and_finds_the_page(small_rag):
    assert isinstance(small_rag.retriever, BaseRetriever)
    docs = small_rag.retriever.invoke("What is CRAN?")
    assert docs[0].metadata["source"].endswith("R-FAQ.pdf")
    # hybrid retrieval puts the passage that answers first (dense alone ranks it 4th)
    assert docs[0].metadata["page"] == 13 and "Comprehensive R Archive Network" in docs[0].page_content
    assert all(0 < d.metadata["score"] <= 1 for d in docs)  # cosine similarity, also for BM25-only hits
    assert len({d.id for d in docs}) == len(docs) == 4


def test_chinese_question_finds_the_chinese_document(small_rag):
    docs = small_rag.retriever.invoke("如何检查 Rust 是否安装正确？")
    assert docs[0].metadata["source"].endswith("rust-installation.zh.md")
    assert "rustc --version" in docs[0].page_content


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_single_retrieval_modes(small_rag, mode):
    from rag.retrieval.hybrid import HybridRetriever

    retriever = HybridRetriever(store=small_rag.store, embeddings=small_rag.embeddings, k=4, mode=mode)
    docs = retriever.invoke("What is CRAN?")
    assert len(docs) == 4
    assert any("Comprehensive R Archive Network" in d.page_content for d in docs)


def test_source_filter(small_rag):
    small_rag.retriever.source_glob = "*.md"
    try:
        docs = small_rag.retriever.invoke("Who originally wrote R?")
    finally:
        small_rag.retriever.source_glob = None
    assert len(docs) == 4 and all(d.metadata["source"].endswith(".md") for d in docs)


def test_ask_with_small_model(small_rag):
    answer = small_rag.ask("What is CRAN?")
    assert isinstance(answer, Answer) and answer.question == "What is CRAN?"
    # The 135M model's wording depends on what llama.cpp reuses of its last prompt (it says the fact, CRAN_FACT,
    # in a fresh process: see test_cli); what it is about does not.
    assert "CRAN" in answer.text and not answer.refused, answer.text
    assert (Path(answer.context[0].source).name, answer.context[0].page) == ("R-FAQ.pdf", 13)
    assert "Comprehensive R Archive Network" in answer.context[0].text
    # The sources are the cited passages of the context, with the numbers the prompt gave them.
    assert answer.sources and all(answer.context[s.number - 1] == s for s in answer.sources)
    # The model cannot say who wrote R, but a passage that names the authors reaches it.
    context = small_rag.ask("Who originally wrote R?").context
    assert any(s.source.endswith("R-FAQ.pdf") and "Ross Ihaka" in s.text for s in context)


def test_stream_yields_text_then_answer(small_rag):
    items = list(small_rag.stream("What is CRAN?"))
    *tokens, final = items
    assert len(tokens) > 1 and all(isinstance(t, str) for t in tokens)
    assert isinstance(final, Answer) and final.text == "".join(tokens).strip()


def test_chain_is_a_runnable_that_composes(small_rag):
    chain = small_rag.chain
    assert isinstance(chain, Runnable)
    out = chain.invoke("What is CRAN?")
    assert set(out) >= {"question", "answer", "sources", "cited", "refused"}
    composed = chain | RunnableLambda(lambda o: o["answer"].upper())
    assert composed.invoke("What is CRAN?") == composed.invoke("What is CRAN?")  # seeded sampling repeats
    # Each answer is about its own question, from the passages the retriever finds for it. (Not compared word for
    # word across calls: llama.cpp reuses the cached part of the last prompt, which can change a near-tie.)
    batch = chain.batch(["What is CRAN?", "What is R?"])
    assert [b["question"] for b in batch] == ["What is CRAN?", "What is R?"]
    assert "CRAN" in batch[0]["answer"] and ABOUT_R.search(batch[1]["answer"]), batch
    assert [ids(b["sources"]) for b in batch] == [retrieved(small_rag, "What is CRAN?"), retrieved(small_rag, "What is R?")]
    streamed = list(chain.stream("What is R?"))
    assert ABOUT_R.search("".join(c.get("answer", "") for c in streamed))
    assert next(ids(c["sources"]) for c in streamed if "sources" in c) == retrieved(small_rag, "What is R?")


def test_async_forms(small_rag):
    chain = small_rag.chain

    async def run():
        one = await chain.ainvoke("What is R?")
        many = await chain.abatch(["What is R?", "What is CRAN?"])
        parts = [c async for c in chain.astream("What is R?")]
        return one, many, parts

    one, many, parts = asyncio.run(run())
    assert ABOUT_R.search(one["answer"]) and ids(one["sources"]) == retrieved(small_rag, "What is R?"), one
    assert ABOUT_R.search(many[0]["answer"]) and "CRAN" in many[1]["answer"], many
    assert [ids(m["sources"]) for m in many] == [retrieved(small_rag, "What is R?"), retrieved(small_rag, "What is CRAN?")]
    assert ABOUT_R.search("".join(p.get("answer", "") for p in parts))
    assert any("cited" in p for p in parts)


def test_chat_session_keeps_history(small_rag):
    session = small_rag.chat()
    session.ask("What is R?")
    second = session.ask("Who wrote it?")
    assert [role for role, _ in session.history] == ["human", "ai", "human", "ai"]
    # Rewritten by the model before retrieval, in the light of the first question: it names R.
    assert second.standalone_question != "Who wrote it?"
    assert ABOUT_R.search(second.standalone_question), second.standalone_question


def test_settings_from_keywords(tmp_path):
    rag = RAG(store=tmp_path / "s", k=2)
    assert rag.settings.k == 2 and rag.settings.store == tmp_path / "s"


# --- parts passed in: RAG(settings, embeddings=..., llm=..., store=...) -------------------------------------------
class RecordingEmbeddings(Embeddings):
    """The real embedding model, remembering what it was asked to embed."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner, self.queries, self.documents = inner, [], 0

    def __getattr__(self, name: str):  # batch_size and the like: the real model's
        return getattr(self.inner, name)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return self.inner.embed_query(text)


def test_a_store_passed_in_holds_what_ingest_wrote(tmp_path, embeddings, data_copy):
    from rag.embeddings import embedding_identity
    from rag.storage.store import Store

    folder = tmp_path / "given"
    store = Store(make_settings(folder), embedding_identity("all-MiniLM-L6-v2", None))
    rag = RAG(make_settings(tmp_path / "unused"), embeddings=embeddings, store=store)
    assert rag.store is store
    doc = data_copy / "pypdf-encryption-decryption.md"
    report = rag.ingest(doc)
    assert report.ingested == [str(doc)] and report.chunks > 1
    assert [f.source for f in store.files()] == [str(doc)] and store.count() == report.chunks
    assert not (tmp_path / "unused").exists()  # the store of the settings was never built
    # A RAG of its own over the folder finds the file on disk.
    assert [(f.source, f.chunks) for f in RAG(make_settings(folder), embeddings=embeddings).files()] == [(str(doc), report.chunks)]


def test_embeddings_passed_in_embed_the_chunks_and_the_questions(tmp_path, embeddings, data_copy):
    recording = RecordingEmbeddings(embeddings)
    # Untranslated: over this Chinese-only store the English question would be searched in Chinese (test_crosslingual).
    rag = RAG(make_settings(tmp_path / "store", translate_questions="off"), embeddings=recording)
    assert rag.embeddings is recording
    report = rag.ingest(data_copy / "zh" / "rust-installation.zh.md")
    assert recording.documents == report.chunks > 0
    assert rag.retriever.embeddings is recording
    docs = rag.retriever.invoke("How do I check that Rust is installed?")
    assert recording.queries == ["How do I check that Rust is installed?"]
    assert docs[0].metadata["source"].endswith("rust-installation.zh.md")


def test_a_chat_model_passed_in_writes_the_answer(small_rag, tmp_path):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    reply = "CRAN is the Comprehensive R Archive Network [1]."
    # The settings name a model file that does not exist: only the model passed in can answer.
    settings = small_rag.settings.model_copy(update={"model": str(tmp_path / "missing.gguf")})
    llm = FakeListChatModel(responses=[reply])
    rag = RAG(settings, embeddings=small_rag.embeddings, store=small_rag.store, llm=llm)
    assert rag.llm is llm
    answer = rag.ask("What is CRAN?")
    assert answer.text == reply and [s.number for s in answer.sources] == [1]
    assert answer.sources[0].source.endswith("R-FAQ.pdf") and answer.sources[0].page == 13


@pytest.mark.parametrize("as_text", [True, False])
def test_a_store_path_is_the_store_setting(tmp_path, embeddings, data_copy, as_text):
    path = tmp_path / "from-keyword"
    rag = RAG(make_settings(tmp_path / "from-settings"), embeddings=embeddings, store=str(path) if as_text else path)
    assert rag.settings.store == path
    rag.ingest(data_copy / "pypdf-encryption-decryption.md")
    assert (path / "manifest.sqlite3").is_file() and not (tmp_path / "from-settings").exists()


@pytest.mark.slow
def test_default_model_answers_with_the_right_citation(default_rag):
    answer = default_rag.ask("What is CRAN?")
    # Asked for the passage's own words, the model gives R-FAQ p. 13's name for CRAN or its definition there.
    assert "Comprehensive R Archive Network" in answer.text or "a collection of sites" in answer.text, answer.text
    assert not answer.refused
    assert any(s.source.endswith("R-FAQ.pdf") and s.page == 13 for s in answer.sources)


@pytest.mark.slow
def test_default_model_answers_chinese(default_rag):
    answer = default_rag.ask("如何检查 Rust 是否安装正确？")
    assert "rustc --version" in answer.text
    assert not answer.refused
    assert answer.sources and all(s.source.endswith("rust-installation.zh.md") for s in answer.sources)


@pytest.mark.slow
def test_default_model_refuses_when_documents_do_not_say(default_rag):
    answer = default_rag.ask("What is the population of Mongolia?")
    assert answer.refused, answer.text


@pytest.mark.slow
def test_default_model_follow_up(default_rag):
    session = default_rag.chat()
    session.ask("What is CRAN?")
    follow = session.ask("How many mirrors or sites does it have?")
    assert "CRAN" in follow.standalone_question
