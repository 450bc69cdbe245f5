"""Prompt assembly, citations, refusal and the context budget, with a recording fake chat model (fast) over a
real store and the real embedding model. The same paths run with the real models in test_api.py."""

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import SystemMessage

from rag.answer.chain import AnswerChain, answer_from_output
from rag.retrieval.hybrid import HybridRetriever


class RecordingFake(FakeListChatModel):
    """Replies from a list, and remembers every prompt it was given."""

    seen: list = []

    def _call(self, messages, *args, **kwargs):
        self.seen.append(messages)
        return super()._call(messages, *args, **kwargs)

    def _stream(self, messages, *args, **kwargs):
        self.seen.append(messages)
        yield from super()._stream(messages, *args, **kwargs)


def make_chain(rag, replies, n_ctx=4096, max_tokens=256, min_score=0.15):
    fake = RecordingFake(responses=replies, seen=[])
    retriever = HybridRetriever(store=rag.store, embeddings=rag.embeddings, k=4)
    return AnswerChain(retriever, fake, n_ctx, max_tokens, min_score).build(), fake


def test_prompt_has_numbered_context_and_answer_cites_it(small_rag):
    chain, fake = make_chain(small_rag, ["Ross Ihaka and Robert Gentleman wrote it [2]."])
    out = chain.invoke("Who originally wrote R?")
    system, user = fake.seen[0][0], fake.seen[0][-1]
    assert isinstance(system, SystemMessage)
    assert "The documents do not say." in system.content  # the refusal instruction
    assert "[1] (" in user.content and "[4] (" in user.content
    assert "[1] (R-FAQ.pdf, p. " in user.content
    assert user.content.rstrip().endswith("cite the passage numbers like [1].")
    assert "/tmp" not in user.content  # passages are labelled by file name, not by where the folder lives
    assert "Question: Who originally wrote R?" in user.content
    answer = answer_from_output(out)
    assert [s.number for s in answer.sources] == [2]
    assert answer.sources[0].text in user.content
    assert not answer.refused


def test_chinese_question_gets_the_chinese_prompt(small_rag):
    chain, fake = make_chain(small_rag, ["使用 rustup 安装 [1]。"])
    answer = answer_from_output(chain.invoke("如何安装 Rust？"))
    assert "你只能根据用户提供的编号资料片段回答问题" in fake.seen[0][0].content
    assert "根据已知信息无法回答该问题" in fake.seen[0][0].content
    assert "问题：如何安装 Rust？" in fake.seen[0][-1].content
    assert answer.sources and answer.sources[0].number == 1


def test_nothing_relevant_means_refusal_without_calling_the_model(small_rag):
    chain, fake = make_chain(small_rag, ["should not be used"], min_score=0.99)
    answer = answer_from_output(chain.invoke("What is the airspeed velocity of an unladen swallow?"))
    assert answer.refused and answer.text == "The documents do not say."
    assert len(answer.dropped) == 4 and all("below min_score" in d["reason"] for d in answer.dropped)
    assert fake.seen == []
    assert len(answer.context) == 4  # the nearest passages are still reported
    assert answer.sources == []


def test_model_refusal_is_detected(small_rag):
    chain, _ = make_chain(small_rag, ["The documents do not say."])
    answer = answer_from_output(chain.invoke("What is the price of a ticket to the moon?"))
    assert answer.refused and answer.sources == []


@pytest.mark.parametrize("n_ctx", [1200, 700])
def test_context_budget_drops_passages_that_do_not_fit(small_rag, n_ctx):
    chain, fake = make_chain(small_rag, ["ok [1]"], n_ctx=n_ctx, max_tokens=200)
    out = chain.invoke("How can R be installed?")
    system = fake.seen[0][-1].content
    assert "[1] (" in system and "[4] (" not in system
    # the fake counts ~2 characters a token; the prompt must fit beside the answer
    assert sum(len(m.content) // 2 + 1 + 4 for m in fake.seen[0]) <= n_ctx - 200 - 16
    first = out["sources"][0].page_content
    assert first[:40] in system  # the best passage is there, whole or cut to fit
    # and what did not fit is reported (rag ask --verbose prints it), each with its reason
    left_out = [d for d in out["dropped"] if "context budget" in d["reason"] or "cut to" in d["reason"]]
    assert left_out and all(d["source"] and "n_ctx" in d["reason"] for d in left_out)
    shown = {(d.metadata["source"], d.metadata.get("page")) for d in out["sources"]}
    assert all((d["source"], d["page"]) not in shown for d in left_out if "context budget" in d["reason"])


def test_follow_up_is_condensed_before_retrieval(small_rag):
    rewrite = "What is CRAN, the Comprehensive R Archive Network?"
    chain, fake = make_chain(small_rag, [rewrite, "A network of sites [1]."])
    history = [("human", "Where can I download R from?"), ("ai", "From CRAN [1].")]
    out = chain.invoke({"question": "What is that?", "chat_history": history})
    assert out["standalone"] == rewrite
    assert "Where can I download R from?" in fake.seen[0][0].content  # the condense prompt saw the history
    assert "From CRAN [1]." in fake.seen[0][0].content
    # retrieval used the rewritten question ("What is that?" alone finds nothing about CRAN)
    assert any("Comprehensive R Archive Network" in d.page_content for d in out["sources"])
    assert f"Question: {rewrite}" in fake.seen[1][-1].content  # and so did the answer prompt


def test_stream_yields_sources_first_then_answer_then_citations(small_rag):
    chain, _ = make_chain(small_rag, ["abc [1]"])
    chunks = list(chain.stream("What is CRAN?"))
    first = lambda key: next(i for i, c in enumerate(chunks) if key in c)  # noqa: E731
    assert first("sources") < first("answer") < first("cited")
    assert sum("answer" in c for c in chunks) == len("abc [1]")  # token by token


def test_bad_input_type():
    chain = AnswerChain(None, None, 1000, 100, 0.1).build()
    with pytest.raises(TypeError, match="takes a question"):
        chain.invoke(42)


def test_focus_gives_the_model_the_sentences_that_bear_on_the_question(small_rag):
    from rag.answer.focus import Focus
    from rag.storage.lexical import tokenize

    whole, fake_whole = make_chain(small_rag, ["Ross Ihaka and Robert Gentleman [1]."])
    out_whole = whole.invoke("Who originally wrote R?")
    fake = RecordingFake(responses=["Ross Ihaka and Robert Gentleman [1]."], seen=[])
    retriever = HybridRetriever(store=small_rag.store, embeddings=small_rag.embeddings, k=4)
    chain = AnswerChain(retriever, fake, 4096, 256, 0.15, focus=Focus(share=0.4), tokenize=tokenize,
                        embeddings=small_rag.embeddings).build()
    out = chain.invoke("Who originally wrote R?")
    # The same passages, in the same order, each cut to at most 40% of its characters plus its best sentence.
    assert [d.metadata["source"] for d in out["sources"]] == [d.metadata["source"] for d in out_whole["sources"]]
    assert out["prompt_tokens"] < 0.75 * out_whole["prompt_tokens"]
    assert "…" in fake.seen[0][-1].content
    # The sentence that answers it stays, in the same passage; what the user is shown is what the model saw.
    holding = [i for i, d in enumerate(out_whole["sources"]) if "Ihaka" in d.page_content]
    assert len(holding) == 1
    kept = out["sources"][holding[0]].page_content
    assert "Ross Ihaka" in kept and "Robert Gentleman" in kept and len(kept) < len(out_whole["sources"][holding[0]].page_content)
    assert answer_from_output(out).sources[0].text == out["sources"][0].page_content


def test_support_check_turns_an_invented_answer_into_a_refusal(small_rag):
    # A recorded answer naming people the passages never mention: few of its (rarity-weighted) words are in them.
    invented = "R was written by Alec Shelbrooke and Warren Buffett in Nebraska [1]."
    supported = "The first two R authors were Robert Gentleman and Ross Ihaka [1]."

    def chain_with(reply):
        fake = RecordingFake(responses=[reply], seen=[])
        retriever = HybridRetriever(store=small_rag.store, embeddings=small_rag.embeddings, k=4)
        return AnswerChain(retriever, fake, 4096, 256, 0.15, support=small_rag._support, min_support=0.5).build()

    out = chain_with(invented).invoke("Who originally wrote R?")
    answer = answer_from_output(out)
    assert (answer.refused, answer.refused_by, answer.sources) == (True, "support", [])
    assert out["support"] < 0.5
    assert answer.text == invented  # the text stays, marked, for the user to judge
    out = chain_with(supported).invoke("Who originally wrote R?")
    answer = answer_from_output(out)
    assert (answer.refused, answer.refused_by) == (False, None) and out["support"] >= 0.9
    assert [s.number for s in answer.sources] == [1]


def test_each_answer_prompt_is_read_afresh(small_rag):
    events = []

    class Recording(RecordingFake):
        def _stream(self, messages, *args, **kwargs):
            events.append(("answer", len(messages)))
            yield from super()._stream(messages, *args, **kwargs)

    fake = Recording(responses=["CRAN is an archive [1].", "R is a language [1]."], seen=[])
    retriever = HybridRetriever(store=small_rag.store, embeddings=small_rag.embeddings, k=4)
    chain = AnswerChain(retriever, fake, 4096, 256, 0.15, fresh_start=lambda: events.append(("fresh", 0))).build()
    chain.invoke("What is CRAN?")
    chain.invoke("What is R?")
    assert events == [("fresh", 0), ("answer", 2), ("fresh", 0), ("answer", 2)]



def test_support_check_catches_a_restated_question_with_an_invented_date(small_rag):
    # The question's words are all in the passages; the date the answer adds is nowhere in the store and weighs most.
    invented = "R was originally written in 1962 [1]."
    fake = RecordingFake(responses=[invented], seen=[])
    retriever = HybridRetriever(store=small_rag.store, embeddings=small_rag.embeddings, k=4)
    chain = AnswerChain(retriever, fake, 4096, 256, 0.15, support=small_rag._support, min_support=0.5).build()
    out = chain.invoke("Who originally wrote R?")
    assert (out["refused"], out["refused_by"]) == (True, "support")
    assert out["support"] < 0.5
