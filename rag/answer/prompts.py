"""The prompt templates, in English and Chinese: grounded answering with numbered citations, and the
rewrite of a follow-up question into a standalone one."""

from __future__ import annotations

import re

from rag.lang import language_of  # noqa: F401  (the chain picks its prompts by it)

REFUSAL = {
    "en": "The documents do not say.",
    "zh": "根据已知信息无法回答该问题。",
}

# The rules go in the system turn, the passages and the question in the user turn: small models follow the
# last turn best, and asking for [n] right after the question is what makes them cite. Two styles, chosen per
# model (rag.models.packaged.answer_style): "brief", the first wording; "quote", which tells the model the answer
# is usually in the passages and asks for one short sentence in the passage's words. A small model told this
# looks for the answer instead of refusing (dev/squad_qa, default model: false refusals 24% -> see
# benchmarks/notes/answer-findings.md); the relevance threshold and the support check catch the questions the
# documents do not answer. The 135M model echoes the quote request back, so it keeps "brief".
ANSWER_SYSTEM = {
    "brief": {
        "en": (
            "You answer questions using only the numbered passages the user gives you from their documents. "
            "Use only facts stated in the passages, never outside knowledge. Cite every fact with the number of its "
            "passage in square brackets, like [2]. Only if the passages really do not contain the answer, reply exactly: {refusal}"
        ),
        "zh": (
            "你只能根据用户提供的编号资料片段回答问题，这些片段来自用户的文档。只使用片段中明确写出的事实，不要使用外部知识。"
            "每个事实后用方括号注明出处编号，例如 [2]。只有当片段中确实没有答案时，才只回答：{refusal}"
        ),
    },
    "quote": {
        "en": (
            "You answer questions using only the numbered passages the user gives you from their documents. "
            "The answer is usually in the passages, sometimes in other words: find it and give it, with the passage's own words. "
            "Use only facts stated in the passages, never outside knowledge. Cite every fact with the number of its "
            "passage in square brackets, like [2]. If no passage is about what the question asks, reply exactly: {refusal}"
        ),
        "zh": (
            "你只能根据用户提供的编号资料片段回答问题，这些片段来自用户的文档。答案通常就在片段中，可能换了说法：找到它并用片段的原话回答。"
            "只使用片段中明确写出的事实，不要使用外部知识。每个事实后用方括号注明出处编号，例如 [2]。如果没有任何片段涉及问题所问的内容，才只回答：{refusal}"
        ),
    },
}

ANSWER_USER = {
    "brief": {
        "en": "Passages:\n{context}\n\nQuestion: {question}\n\nAnswer briefly, using only the passages, and cite the passage numbers like [1].",
        "zh": "资料：\n{context}\n\n问题：{question}\n\n请只根据资料用中文简洁回答，并在句末用编号注明出处，例如 [1]。",
    },
    "quote": {
        "en": ("Passages:\n{context}\n\nQuestion: {question}\n\nAnswer in one short sentence with the words of the passage "
               "that answers it, and cite its number like [1]."),
        "zh": "资料：\n{context}\n\n问题：{question}\n\n请用资料中的原话，以一句简短的中文回答，并在句末用编号注明出处，例如 [1]。",
    },
}
STYLES = tuple(ANSWER_SYSTEM)


def answer_messages(style: str, lang: str, context: str, question: str) -> tuple[str, str]:
    """The system and user turns of the answer prompt in this style and language."""
    system = ANSWER_SYSTEM[style][lang].format(refusal=REFUSAL[lang])
    return system, ANSWER_USER[style][lang].format(context=context, question=question)

CONDENSE = {
    "en": (
        "Rewrite the last user question as one standalone question that can be understood without the "
        "conversation. Replace pronouns with what they refer to. Reply with the question only.\n\n"
        "Conversation:\n{history}\n\nLast question: {question}\nStandalone question:"
    ),
    "zh": (
        "把用户的最后一个问题改写成一个不依赖上文也能理解的完整问题，把代词替换成所指的内容。只输出改写后的问题。\n\n"
        "对话：\n{history}\n\n最后一个问题：{question}\n完整问题："
    ),
}

# Cross-lingual questions: the question put into the language of documents written in another one (the key is the
# language translated into), before retrieval. Names, commands and code stay as typed: they match either way.
TRANSLATE = {
    "en": (
        "Translate this question into English. Keep names, commands, file names, options and code exactly as "
        "written. Reply with the English question only.\n\nQuestion: {question}\nEnglish:"
    ),
    "zh": (
        "把这个问题翻译成简体中文。名称、命令、文件名、选项和代码保持原样，不要翻译。只输出译好的中文问题。\n\n"
        "问题：{question}\n中文："
    ),
}

def format_context(passages: list[tuple[str, str]]) -> str:
    """Number the passages [1]..[k]; each is (label, text) where the label names file and page."""
    return "\n\n".join(f"[{i}] ({label})\n{text}" for i, (label, text) in enumerate(passages, 1))


_CITATION = re.compile(r"\[(\d+(?:\s*[,，、]\s*\d+)*)\]")


def cited_numbers(answer: str, k: int) -> list[int]:
    """The passage numbers an answer cites, in order of first citation, within 1..k."""
    seen: list[int] = []
    for group in _CITATION.findall(answer):
        for n in re.split(r"\s*[,，、]\s*", group):
            i = int(n)
            if 1 <= i <= k and i not in seen:
                seen.append(i)
    return seen


# Pronouns and fillers an answer adds around the facts it takes from a passage ("Her teapot is purple"): the
# support check weighs words by rarity in the store, where these may be rare or absent, yet they carry no fact.
_FILLERS = re.compile(r"\b(he|she|her|hers|him|his|they|them|it|its|their|theirs|this|that|these|those|also|"
                      r"passage|passages|document|documents|states|stated|according|mentioned|answer)\b", re.IGNORECASE)


def answer_facts(answer: str) -> str:
    """The answer without its citation marks ([1], [2, 3]) and the fillers around its facts."""
    return _FILLERS.sub(" ", _CITATION.sub(" ", answer))


def is_refusal(answer: str) -> bool:
    """True when the model said the documents do not hold the answer.

    A refusal sentence that opens the answer, or that comes with nothing cited, is a refusal; one tacked on
    after a cited answer ("R was written by Ross Ihaka [1]. The documents do not say.", which small models do
    when one part of a question is not covered) is not: the answer and its citations stand.
    """
    text = answer.strip().lower()
    for marker in [r.lower().rstrip("。.") for r in REFUSAL.values()] + ["无法回答"]:
        at = text.find(marker)
        if at < 0:
            continue
        if not text[:at].strip(" \n\t\"'“”「」*:：-"):
            return True
        return not _CITATION.search(text[:at] + text[at + len(marker):])
    return False
