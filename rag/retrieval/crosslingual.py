"""Cross-lingual questions: a question in one language over files in another is also searched in the files'
language (translated by the chat model), and the two result lists are fused by reciprocal rank."""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.documents import Document

from rag.lang import HAN_CHAR, language_of

# As the hybrid retriever's fusion (rag/retrieval/hybrid.py RRF_K): the top of each list counts most.
RRF_K = 20


def search(query: str, k: int, find: Callable[[str], list[Document]], translate: Callable[[str, str], str],
           languages: dict[str, int], floor: float = 0.0) -> list[Document]:
    """`find(query)`, and when the store holds files in another language than the question's (`languages`:
    language -> files), `find` of the question translated into it (`translate(question, language)`). Over a store
    with no file in the question's own language only the translation is searched (the question as typed would
    match nothing but the names both share, which the translation keeps). Over a store in both, the two lists are
    fused, passages whose relevance (`metadata["score"]`) reaches `floor` first: the other language's best match
    for a question its files do not answer must not push out a relevant one. Documents found through the
    translation carry it in `metadata["query"]`."""
    own = language_of(query)
    others = sorted(set(languages) - {own})
    translation = usable_translation(query, translate(query, others[0]), others[0]) if others else None
    if not translation:
        return find(query)
    found = [Document(d.page_content, id=d.id, metadata={**d.metadata, "query": translation}) for d in find(translation)]
    if own not in languages:
        return found
    lists = [find(query), found]
    relevant = [[d for d in docs if d.metadata.get("score", 0.0) >= floor] for docs in lists]
    fused = fuse(relevant, k)
    # Fewer than k relevant: the rest by rank, for display beside a refusal or for a lower min_score per call.
    return fused + [d for d in fuse(lists, 2 * k) if d.id not in {f.id for f in fused}][:k - len(fused)]


def usable_translation(question: str, text: str, target: str) -> str | None:
    """The model's reply as a search question: its first line, unquoted; None when it is empty, runs on, or is not
    in the target language (the model answered or echoed instead of translating)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    for prefix in ("English:", "中文：", "中文:", "Question:", "问题：", "翻译：", "译文："):
        line = line.removeprefix(prefix).strip()
    line = line.strip('"“”「」')
    # Into Chinese, names stay in Latin letters ("Pre-Depends和Depends有什么区别？" is mostly letters): any Han
    # character tells a translation from an echo; into English, the line must read as English.
    translated = bool(HAN_CHAR.search(line)) if target == "zh" else language_of(line) == "en"
    if not line or len(line) > 4 * len(question) + 200 or not translated or line == question:
        return None
    return line


def fuse(lists: list[list[Document]], k: int) -> list[Document]:
    """The k Documents best by summed reciprocal rank over the lists (ties: the earlier list's first); a chunk in
    several lists keeps its first copy."""
    score: dict[str, float] = {}
    first: dict[str, Document] = {}
    for docs in lists:
        for rank, doc in enumerate(docs):
            key = doc.id or doc.page_content
            score[key] = score.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
            first.setdefault(key, doc)
    order = sorted(first, key=lambda key: score[key], reverse=True)  # stable: ties keep the lists' order
    return [first[key] for key in order[:k]]
