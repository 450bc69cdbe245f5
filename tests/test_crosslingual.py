"""Cross-lingual questions: the translation step's logic (fakes for the model and the search, to check the rules
fast), and end to end with the default packaged model over data/ (an English and a Chinese document)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag.retrieval.crosslingual import fuse, search, usable_translation


def doc(cid: str) -> Document:
    return Document(f"text of {cid}", id=cid, metadata={"source": cid})


def test_usable_translation_takes_the_first_line_without_labels_or_quotes():
    assert usable_translation("怎样给文件加密码？", 'English: "How do I add a password to a file?"\nSure!', "en") == \
        "How do I add a password to a file?"
    assert usable_translation("How is Pre-Depends different from Depends?", "Pre-Depends和Depends有什么区别？", "zh") == \
        "Pre-Depends和Depends有什么区别？"
    assert usable_translation("Should scripts call apt?", "翻译：脚本应该调用 apt 吗？", "zh") == "脚本应该调用 apt 吗？"


def test_usable_translation_refuses_echoes_answers_in_the_wrong_language_and_run_ons():
    assert usable_translation("怎样给文件加密码？", "Question: 怎样给文件加密码？", "en") is None  # an echo
    assert usable_translation("Which umask should I use?", "翻译：Which umask should I use?", "zh") is None
    assert usable_translation("Which umask?", "中文：", "zh") is None
    assert usable_translation("R 是什么？", "R is " + "a language " * 40, "en") is None  # ran on: an answer
    assert usable_translation("R 是什么？", "  \n ", "en") is None


def test_fuse_sums_reciprocal_ranks_and_keeps_the_first_copy():
    a, b, c, d = doc("a"), doc("b"), doc("c"), doc("d")
    # b: 1/22 + 1/21 beats a: 1/21 alone; c and d tie at 1/22 apart from b's second copy: list order decides.
    assert [x.id for x in fuse([[a, b], [b, c, d]], 3)] == ["b", "a", "c"]
    assert fuse([[a, b], [Document("other copy", id="b")]], 2)[0].page_content == "text of b"


def test_search_over_a_store_in_the_other_language_searches_only_the_translation():
    asked: list[str] = []

    def find(query: str) -> list[Document]:
        asked.append(query)
        return [doc(query)]

    found = search("怎样给文件加密码？", 4, find, lambda q, lang: f"How do I add a password to a file? ({lang})", {"en": 3})
    assert asked == ["How do I add a password to a file? (en)"]
    assert found[0].metadata["query"] == "How do I add a password to a file? (en)"


def test_search_over_a_mixed_store_fuses_both_and_a_one_language_store_translates_nothing():
    def find(query: str) -> list[Document]:
        return [doc(f"{query}-1"), doc("shared")]

    def translate(question: str, lang: str) -> str:
        assert lang == "zh"
        return "如何卸载？"

    found = search("How do I uninstall it?", 3, find, translate, {"en": 2, "zh": 1})
    assert [d.id for d in found] == ["shared", "How do I uninstall it?-1", "如何卸载？-1"]

    def never(question: str, lang: str) -> str:
        raise AssertionError("translated a question the store's own language answers")

    assert [d.id for d in search("How?", 4, find, never, {"en": 5})] == ["How?-1", "shared"]


def test_a_mixed_store_fuses_relevant_passages_first():
    def scored(cid: str, score: float) -> Document:
        return Document(cid, id=cid, metadata={"score": score})

    lists = {"Where do pelicans nest?": [scored("nest", 0.7), scored("diet", 0.5), scored("flight", 0.2)],
             "鹈鹕在哪里筑巢？": [scored("rust-zh", 0.1), scored("nest-zh", 0.4)]}
    found = search("Where do pelicans nest?", 4, lists.__getitem__, lambda q, lang: "鹈鹕在哪里筑巢？",
                   {"en": 5, "zh": 1}, floor=0.3)
    # The relevant ones first (rust-zh set aside, nest-zh heads its list: 1/21 like nest, diet 1/22), then the rest
    # by their rank in the unfiltered lists (rust-zh 1/21 before flight 1/23).
    assert [d.id for d in found] == ["nest", "nest-zh", "diet", "rust-zh"]


def test_store_languages_reads_each_file(small_rag):
    # data/: R-FAQ.pdf, the pypdf page and the OCR'd scan in English, the Rust chapter in Chinese.
    assert small_rag.store.languages() == {"en": 3, "zh": 1}


# End to end: the default model translates, the real store and embedder search. Without the translation neither
# question finds its passage in the top 4 (checked below with translate_questions off), so the test can fail.
ZH_ABOUT_ENGLISH = ("怎样给一个文件设置打开密码？", "pypdf-encryption-decryption.md")
EN_ABOUT_CHINESE = ("How do I remove the toolchain and its installer from my computer?", "rust-installation.zh.md")


@pytest.mark.parametrize("question, expected", [ZH_ABOUT_ENGLISH, EN_ABOUT_CHINESE])
def test_a_question_finds_the_passage_in_the_other_language(default_rag, question, expected):
    from rag import RAG

    names = [Path(d.metadata["source"]).name for d in default_rag.retriever.invoke(question)]
    assert expected in names[:2], names
    untranslated = RAG(default_rag.settings.model_copy(update={"translate_questions": "off"}),
                       embeddings=default_rag.embeddings, store=default_rag.store)
    assert expected not in [Path(d.metadata["source"]).name for d in untranslated.retriever.invoke(question)]


def test_the_answer_comes_from_the_other_language_and_says_what_was_searched(default_rag):
    from rag.lang import language_of

    answer = default_rag.ask(ZH_ABOUT_ENGLISH[0])
    assert language_of(answer.translated_question) == "en"
    assert answer.to_dict()["translated_question"] == answer.translated_question
    assert ZH_ABOUT_ENGLISH[1] in [Path(s.source).name for s in answer.context]
    # Seen: "给一个文件设置打开密码，可以使用 `encrypt` 方法。[2]": Chinese, from the English passage, citing it.
    assert not answer.refused
    assert language_of(answer.text) == "zh" and "encrypt" in answer.text
    assert ZH_ABOUT_ENGLISH[1] in [Path(s.source).name for s in answer.sources]
    assert answer.support is None  # words cannot be compared across languages: not checked


@pytest.mark.parametrize("question, answer, translated, checked", [
    # A Chinese question answered from English passages: the answer's words cannot be looked up in them. This one
    # is mostly Latin letters, so only the question tells that it is Chinese.
    ("pypdf 处理 AES 加密的 PDF 需要另外装什么库？", "pypdf 处理 AES 加密的 PDF 需要另外装 `pyca/cryptography` 库。[1]", None, False),
    ("Which library does pypdf need for AES?", "pypdf needs the cryptography library [1].", None, True),
    # The passage was found through the question's translation: in another language, whatever its letters say.
    ("Which library does pypdf need for AES?", "pypdf needs the cryptography library [1].", "pypdf 需要什么库？", False),
])
def test_the_support_check_is_skipped_across_languages(question, answer, translated, checked):
    from rag.answer.chain import AnswerChain

    passage = Document("If you want to use AES encryption, install pypdf[crypto]: the cryptography package.",
                       metadata={"query": translated} if translated else {})
    calls: list[str] = []

    def support(text: str, passages: list[str]) -> float:
        calls.append(text)
        return 0.2  # below min_support: a checked answer becomes a refusal

    chain = AnswerChain(None, None, 4096, 512, 0.3, support=support, min_support=0.5)
    out = chain._citations({"answer": answer, "sources": [passage], "grounded": True, "question": question})
    assert (len(calls), out["refused"], out.get("support")) == ((1, True, 0.2) if checked else (0, False, None))
