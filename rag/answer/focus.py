"""Shorter prompts: of each retrieved passage, keep the sentences that bear on the question (scored with the
embedder's similarity and the question's words they hold), with a neighbour each for sense, within a share of
the passage's length; the passage keeps its number, so citations still map to file and page."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# A sentence ends at . ! ? (followed by a space or the end) or at Chinese 。！？；, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])|\n\s*\n")
GAP = "…"


@dataclass(frozen=True)
class Focus:
    """How to shorten passages: keep `share` of each passage's characters (at least its best sentence), scoring
    a sentence as `weight` x cosine + (1 - weight) x word overlap."""

    share: float = 0.6
    weight: float = 0.5
    neighbours: int = 1


def split_sentences(text: str) -> list[str]:
    """The sentences of a passage, in order, stripped; nothing is lost but the whitespace between them."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def overlap_scores(question: str, sentences: Sequence[str], tokenize: Callable[[str], list[str]]) -> list[float]:
    """For each sentence, the IDF-weighted share of the question's words it holds (IDF over these sentences)."""
    words = set(tokenize(question))
    if not words or not sentences:
        return [0.0] * len(sentences)
    bags = [set(tokenize(s)) for s in sentences]
    n = len(bags)
    idf = {w: math.log(1 + (n - (df := sum(w in b for b in bags)) + 0.5) / (df + 0.5)) for w in words}
    total = sum(idf.values()) or 1.0
    return [sum(idf[w] for w in words & bag) / total for bag in bags]


def cosines(question_vector: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """Cosine of each vector to the question's (a zero vector counts as length 1: cosine 0)."""
    q = np.asarray(question_vector, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    norms = np.linalg.norm(m, axis=1)
    norms[norms == 0] = 1.0
    return (m @ q / (norms * (np.linalg.norm(q) or 1.0))).tolist()


def pick(scores: Sequence[float], lengths: Sequence[int], budget: int, neighbours: int) -> list[int]:
    """Indices of the sentences to keep, in order: the best first, each with its `neighbours` before and after
    while they fit, until `budget` characters are used; the best sentence is always kept."""
    kept: set[int] = set()
    used = 0
    for best in sorted(range(len(scores)), key=lambda i: -scores[i]):
        group = [j for j in range(best - neighbours, best + neighbours + 1) if 0 <= j < len(scores) and j not in kept]
        # The sentence itself, then its neighbours, nearest first, each while it fits.
        for j in sorted(group, key=lambda j: (j != best, abs(j - best))):
            if kept and used + lengths[j] > budget:
                if j == best:
                    break
                continue
            kept.add(j)
            used += lengths[j]
        if used >= budget:
            break
    return sorted(kept)


def shorten(sentences: Sequence[str], scores: Sequence[float], focus: Focus) -> str:
    """The kept sentences of one passage, joined, with ' … ' where sentences were left out."""
    lengths = [len(s) + 1 for s in sentences]
    kept = pick(scores, lengths, int(focus.share * sum(lengths)), focus.neighbours)
    parts: list[str] = []
    for n, i in enumerate(kept):
        if n and i != kept[n - 1] + 1:
            parts.append(GAP)
        parts.append(sentences[i])
    if kept and kept[0] > 0:
        parts.insert(0, GAP)
    if kept and kept[-1] < len(sentences) - 1:
        parts.append(GAP)
    return " ".join(parts)


def focus_passages(question: str, passages: Sequence[str], tokenize: Callable[[str], list[str]],
                   embed: Callable[[list[str]], tuple[list[float], list[list[float]]]] | None,
                   focus: Focus = Focus()) -> list[str]:
    """Each passage shortened to the sentences that bear on `question`. `embed(texts)` gives the question's
    vector and the texts' (None: word overlap alone)."""
    split = [split_sentences(p) for p in passages]
    flat = [s for sentences in split for s in sentences]
    lexical = overlap_scores(question, flat, tokenize)
    dense = cosines(*embed(flat)) if embed and flat else [0.0] * len(flat)
    w = focus.weight if embed else 0.0
    scores = [w * c + (1 - w) * o for c, o in zip(dense, lexical)]
    out, at = [], 0
    for passage, sentences in zip(passages, split):
        own = scores[at:at + len(sentences)]
        at += len(sentences)
        out.append(shorten(sentences, own, focus) if len(sentences) > 1 else passage)
    return out
