"""The answering chain (LCEL): condense a follow-up -> retrieve -> fit the context budget -> prompt in the
question's language -> model -> numbered citations. Input: a question (str) or {"question", "chat_history"};
output: {"question", "standalone", "sources", "grounded", "dropped", "prompt_tokens", "translation", "answer", "cited",
"refused"}, streamable."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableGenerator, RunnableLambda, RunnablePassthrough
from langchain_core.runnables.utils import AddableDict

from rag.answer import prompts
from rag.answer.focus import Focus, focus_passages


@dataclass
class Source:
    """One passage shown to the model, numbered as the answer cites it."""

    number: int
    source: str
    page: int | None
    text: str
    score: float

    @property
    def label(self) -> str:
        return display_label(self.source, self.page)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "source": self.source, "page": self.page, "text": self.text, "score": self.score}


@dataclass
class Answer:
    """An answer with the sources it cites (`sources`) and every passage the model saw (`context`)."""

    question: str
    text: str
    sources: list[Source] = field(default_factory=list)
    context: list[Source] = field(default_factory=list)
    refused: bool = False
    standalone_question: str | None = None
    # Retrieved passages the model did not see whole: {"source", "page", "score", "reason"} each.
    dropped: list[dict[str, Any]] = field(default_factory=list)
    # Why it refused: "threshold" (no passage relevant enough: the model was not asked), "model", or "support"
    # (the model answered, but in words the passages do not hold: the text stays, for the user to judge).
    refused_by: str | None = None
    prompt_tokens: int = 0
    # The support check's score: the IDF-weighted share of the answer's words found in the passages shown (None:
    # not checked, as for a refusal or with min_support 0).
    support: float | None = None
    # A cross-lingual question: what it was also searched as, in the language of the store's other files.
    translated_question: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "sources": [s.to_dict() for s in self.sources], "refused": self.refused,
                "refused_by": self.refused_by, "support": self.support, "translated_question": self.translated_question}


def _dropped(doc: Document, reason: str) -> dict[str, Any]:
    meta = doc.metadata
    return {"source": meta.get("source", "?"), "page": meta.get("page"), "score": float(meta.get("score", 0.0)), "reason": reason}


def display_label(source: str, page: int | None) -> str:
    """'data/R-FAQ.pdf, p. 3': relative to the working folder when the file is under it."""
    try:
        rel = os.path.relpath(source)
        shown = rel if not rel.startswith("..") else source
    except ValueError:
        shown = source
    return f"{shown}, p. {page}" if page else shown


def to_sources(docs: Sequence[Document]) -> list[Source]:
    return [
        Source(i, d.metadata.get("source", "?"), d.metadata.get("page"), d.page_content, float(d.metadata.get("score", 0.0)))
        for i, d in enumerate(docs, 1)
    ]


def answer_from_output(out: dict[str, Any]) -> Answer:
    """Turn the chain's output dict into an `Answer`."""
    context = to_sources(out.get("sources") or [])
    cited = [context[n - 1] for n in out.get("cited") or [] if 0 < n <= len(context)]
    refused = bool(out.get("refused"))
    return Answer(
        question=out.get("question", ""),
        text=(out.get("answer") or "").strip(),
        sources=cited,
        context=context,
        refused=refused,
        standalone_question=out.get("standalone"),
        dropped=list(out.get("dropped") or []),
        refused_by=(out.get("refused_by") or ("model" if out.get("grounded") else "threshold")) if refused else None,
        prompt_tokens=int(out.get("prompt_tokens") or 0),
        support=out.get("support"),
        translated_question=out.get("translation"),
    )


def _history_messages(history: Sequence[Any] | None) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for item in history or []:
        if isinstance(item, BaseMessage):
            messages.append(item)
        else:
            role, text = item
            messages.append(HumanMessage(text) if role in ("human", "user") else AIMessage(text))
    return messages


def _normalize(inp: Any) -> dict[str, Any]:
    if isinstance(inp, str):
        return {"question": inp, "chat_history": []}
    if isinstance(inp, dict) and "question" in inp:
        return {"question": str(inp["question"]), "chat_history": _history_messages(inp.get("chat_history"))}
    raise TypeError("the chain takes a question (str) or a dict with 'question' and optional 'chat_history'")


class AnswerChain:
    """Builds the LCEL `Runnable`; holds the model, retriever and budget it needs."""

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: Runnable,
        n_ctx: int,
        max_tokens: int,
        min_score: float,
        count_tokens: Callable[[str], int] | None = None,
        focus: Focus | None = None,
        tokenize: Callable[[str], list[str]] | None = None,
        embeddings: Embeddings | None = None,
        support: Callable[[str, list[str]], float] | None = None,
        min_support: float = 0.0,
        style: str = "brief",
        fresh_start: Callable[[], None] | None = None,
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.min_score = min_score
        # Without the model's tokenizer, assume ~3 characters per token (safe for English; Chinese is ~1-1.5).
        self.count_tokens = count_tokens or (lambda text: len(text) // 2 + 1)
        # Shorter prompts: the passages cut to their sentences that bear on the question (None: whole passages).
        self.focus = focus if tokenize else None
        self.tokenize = tokenize
        self.embeddings = embeddings
        # The support check: support(answer, passages) is the IDF-weighted share of the answer's words found in the
        # passages the model was shown; below min_support the answer counts as a refusal (refused_by "support").
        self.support = support
        self.min_support = min_support
        self.style = style  # the answer prompt's wording (prompts.STYLES)
        # Called before each answer's prompt: llama.cpp then reads the whole prompt afresh instead of reusing what
        # the last question shared with it; reused, the same question's logits differ by the last question (the
        # batches split differently; benchmarks/notes/stable-answers.md), so answers would depend on history.
        self.fresh_start = fresh_start

    def build(self) -> Runnable:
        return (
            RunnableLambda(_normalize, name="normalize")
            | RunnablePassthrough.assign(standalone=RunnableLambda(self._condense, name="condense"))
            | RunnablePassthrough.assign(retrieved=RunnableLambda(self._retrieve, name="retrieve"))
            | RunnableLambda(self._select, name="select")
            # One generator passes the inputs on, then streams the answer: RunnablePassthrough.assign would hand
            # every token between threads: generation at 0.78x raw llama.cpp instead of 0.99x (bench_answer, 2 cores).
            | RunnableGenerator(self._generate, self._agenerate, name="generate")
            | RunnableGenerator(self._cite, self._acite, name="cite")
        ).with_config(run_name="rag")

    # --- steps ---
    def _condense(self, x: dict[str, Any], config: RunnableConfig) -> str:
        history = x["chat_history"]
        question = x["question"]
        if not history:
            return question
        lang = prompts.language_of(question)
        turns = "\n".join(f"{'User' if isinstance(m, HumanMessage) else 'Assistant'}: {m.content}" for m in history[-6:])
        prompt = prompts.CONDENSE[lang].format(history=turns, question=question)
        text = self.llm.invoke([HumanMessage(prompt)], config=config).content
        rewritten = str(text).strip().strip('"').splitlines()[0].strip() if str(text).strip() else ""
        # A rewrite that went off the rails would retrieve the wrong passages: keep the user's words.
        return rewritten if 0 < len(rewritten) <= 4 * len(question) + 200 else question

    def _retrieve(self, x: dict[str, Any], config: RunnableConfig) -> list[Document]:
        return self.retriever.invoke(x["standalone"], config=config)

    def _messages(self, x: dict[str, Any], docs: list[Document]) -> list[BaseMessage]:
        lang = prompts.language_of(x["question"])
        # The file name, not the full path: shorter, and the same prompt wherever the folder lives.
        passages = [(display_label(Path(d.metadata.get("source", "?")).name, d.metadata.get("page")), d.page_content) for d in docs]
        system, user = prompts.answer_messages(self.style, lang, prompts.format_context(passages), x["standalone"])
        return [SystemMessage(system), *x["chat_history"][-4:], HumanMessage(user)]

    def _select(self, x: dict[str, Any]) -> dict[str, Any]:
        """`sources`: the passages the model will see, numbered [1].. in this order; when none is relevant
        enough, the nearest ones (for display) and `grounded` False, which means: refuse without asking.
        `dropped`: each retrieved passage the model does not see whole, and why."""
        retrieved = x.pop("retrieved")
        relevant = self.relevant(retrieved)
        focused = self.focused(x["standalone"], relevant)
        context = self.fit(x, focused)
        dropped = [_dropped(d, f"score {d.metadata.get('score', 0.0):.2f} below min_score {self.min_score}")
                   for d in retrieved if d not in relevant]
        budget = f"does not fit the context budget (n_ctx {self.n_ctx}, {self.max_tokens} tokens kept for the answer)"
        dropped += [_dropped(d, budget) for d in relevant[len(context):]]
        if context and len(context[0].page_content) < len(focused[0].page_content):
            dropped.append(_dropped(relevant[0], f"cut to {len(context[0].page_content)} of "
                                                 f"{len(focused[0].page_content)} characters to fit n_ctx {self.n_ctx}"))
        tokens = self.prompt_tokens(x, context) if context else 0
        translation = next((d.metadata["query"] for d in retrieved if "query" in d.metadata), None)
        return {**x, "sources": context or retrieved, "grounded": bool(context), "dropped": dropped,
                "prompt_tokens": tokens, "translation": translation}

    def focused(self, question: str, docs: list[Document]) -> list[Document]:
        """The passages cut to the sentences that bear on the question (rag/answer/focus.py), when focus is on."""
        if not self.focus or not docs:
            return docs
        emb = self.embeddings

        def embed(texts: list[str]) -> tuple[list[float], list[list[float]]]:
            return emb.embed_query(question), emb.embed_documents(texts)

        texts = focus_passages(question, [d.page_content for d in docs], self.tokenize, embed if emb else None, self.focus)
        return [Document(t, metadata=d.metadata) for t, d in zip(texts, docs)]

    def relevant(self, docs: list[Document]) -> list[Document]:
        return [d for d in docs if d.metadata.get("score", 1.0) >= self.min_score]

    def prompt_tokens(self, x: dict[str, Any], docs: list[Document]) -> int:
        """The prompt's length in tokens with these passages (4 a message for the chat template's marks)."""
        return sum(self.count_tokens(str(m.content)) + 4 for m in self._messages(x, docs))

    def fit(self, x: dict[str, Any], docs: list[Document]) -> list[Document]:
        """Drop the weakest passages until the prompt and the answer fit the context window."""
        budget = self.n_ctx - self.max_tokens - 16  # chat-template tokens
        size = partial(self.prompt_tokens, x)
        kept = list(docs)
        while kept and size(kept) > budget:
            kept.pop()
        if kept or not docs:
            return kept
        # Not even the best passage fits whole: give the model as much of it as fits, never nothing.
        best = docs[0]
        lo, hi = 0, len(best.page_content)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size([Document(best.page_content[:mid], metadata=best.metadata)]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return [Document(best.page_content[:lo], metadata=best.metadata)] if lo >= 40 else []

    def _prompt_or_refusal(self, x: dict[str, Any]) -> tuple[list[BaseMessage] | None, str]:
        if not x["grounded"]:
            return None, prompts.REFUSAL[prompts.language_of(x["question"])]
        return self._messages(x, x["sources"]), ""

    def _generate(self, inputs: Iterator[dict[str, Any]], config: RunnableConfig) -> Iterator[AddableDict]:
        """The inputs, passed on first, then {"answer": token} as the model streams."""
        x: dict[str, Any] = {}
        for chunk in inputs:
            x.update(chunk)
        yield AddableDict(x)
        messages, refusal = self._prompt_or_refusal(x)
        if messages is None:
            yield AddableDict(answer=refusal)
            return
        if self.fresh_start:
            self.fresh_start()
        for chunk in self.llm.stream(messages, config=config):
            if chunk.content:
                yield AddableDict(answer=str(chunk.content))

    async def _agenerate(self, inputs: AsyncIterator[dict[str, Any]], config: RunnableConfig) -> AsyncIterator[AddableDict]:
        x: dict[str, Any] = {}
        async for chunk in inputs:
            x.update(chunk)
        yield AddableDict(x)
        messages, refusal = self._prompt_or_refusal(x)
        if messages is None:
            yield AddableDict(answer=refusal)
            return
        if self.fresh_start:
            self.fresh_start()
        async for chunk in self.llm.astream(messages, config=config):
            if chunk.content:
                yield AddableDict(answer=str(chunk.content))

    def _cite(self, inputs: Iterator[dict[str, Any]]) -> Iterator[AddableDict]:
        seen: dict[str, Any] = {"answer": "", "sources": [], "grounded": False, "question": ""}
        for chunk in inputs:
            self._collect(seen, chunk)
            yield AddableDict(chunk)
        yield self._citations(seen)

    async def _acite(self, inputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[AddableDict]:
        seen: dict[str, Any] = {"answer": "", "sources": [], "grounded": False, "question": ""}
        async for chunk in inputs:
            self._collect(seen, chunk)
            yield AddableDict(chunk)
        yield self._citations(seen)

    @staticmethod
    def _collect(seen: dict[str, Any], chunk: dict[str, Any]) -> None:
        for key in ("sources", "grounded", "question"):
            if key in chunk:
                seen[key] = chunk[key]
        seen["answer"] += chunk.get("answer", "")

    def _citations(self, seen: dict[str, Any]) -> AddableDict:
        answer, sources = seen["answer"], seen["sources"]
        refused = prompts.is_refusal(answer)
        usable = len(sources) if seen["grounded"] else 0
        cited = [] if refused else prompts.cited_numbers(answer, usable)
        if not refused and not cited:
            cited = list(range(1, usable + 1))  # uncited answer: show every passage it was given
        out = AddableDict(cited=cited, refused=refused)
        passages = [d.page_content for d in sources]
        facts = prompts.answer_facts(answer)
        # Words can only be found in passages of the answer's own language: an answer from passages found through the
        # question's translation (rag/retrieval/crosslingual.py), or in another language than the passages, is not
        # checked. Languages are judged by the question too: "pypdf 需要另外装 `pyca/cryptography` 库" is Chinese,
        # though mostly Latin letters (and so are the Chinese Debian manual's pages, full of commands).
        shown = prompts.language_of("\n".join(passages))
        across = (any("query" in d.metadata for d in sources)
                  or shown != prompts.language_of(seen["question"]) or shown != prompts.language_of(facts))
        if usable and not refused and self.support and self.min_support > 0 and not across:
            share = self.support(facts, passages)
            out["support"] = round(share, 4)
            if share < self.min_support:
                # Words the passages do not hold: the model answered from elsewhere (or invented). Say so.
                out.update(cited=[], refused=True, refused_by="support")
        return out
