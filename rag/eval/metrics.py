"""The scores: retrieval metrics of a run against relevance judgements (trec_eval, through pytrec-eval-terrier),
and answer matching (normalisation, contains-a-reference) and latency percentiles for question answering."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from rag.lang import HAN, KANA_HANGUL

#: Reported for every retrieval run: our name (measure@depth) -> trec_eval's measure. Each is computed on every
#: query's first `depth` documents; trec_eval's recip_rank has no cutoff of its own, so that cut is what makes it
#: MRR@10. success_1 (a relevant document at rank 1) is hit@1. trec_eval's nDCG gains are the grades (linear),
#: as BEIR reports.
RETRIEVAL_METRICS: dict[str, str] = {
    "ndcg@10": "ndcg_cut_10",
    "recall@10": "recall_10",
    "recall@100": "recall_100",
    "mrr@10": "recip_rank",
    "hit@1": "success_1",
}


def _top(docs: Mapping[str, float], depth: int) -> dict[str, float]:
    """The first `depth` documents by score, ties in the run's order, scored depth, depth-1, ...: trec_eval
    breaks ties by document id, and with distinct scores it ranks (and the cut keeps) what the run ranks."""
    order = sorted(docs, key=lambda d: -float(docs[d]))[:depth]  # sorted is stable: ties keep the run's order
    return {d: float(len(order) - i) for i, d in enumerate(order)}


def score_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
              metrics: Mapping[str, str] = RETRIEVAL_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score a run (query id -> {document id: score}, higher first) with trec_eval. `metrics` maps our names
    (measure@depth) to trec_eval's. Queries missing from the run, or with nothing found, score 0; run entries
    without judgements are ignored. Returns (means over the judged queries, per-query scores)."""
    import pytrec_eval

    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    if not qrels:
        raise ValueError("no query has a relevance judgement")
    per_query = {q: dict.fromkeys(metrics, 0.0) for q in qrels}
    by_depth: dict[int, dict[str, str]] = {}
    for name, measure in metrics.items():
        by_depth.setdefault(int(name.rpartition("@")[2]), {})[name] = measure
    for depth, group in by_depth.items():
        cut = {q: _top(docs, depth) for q, docs in run.items() if q in qrels and docs}
        scores = pytrec_eval.RelevanceEvaluator(qrels, set(group.values())).evaluate(cut)
        for q, values in scores.items():
            for name, measure in group.items():
                per_query[q][name] = float(values[measure])
    means = {name: math.fsum(row[name] for row in per_query.values()) / len(per_query) for name in metrics}
    return means, per_query


_CJK = re.compile(f"[{HAN}{KANA_HANGUL}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)
_CITATIONS = re.compile(r"\[\d+(?:\s*[,，、]\s*\d+)*\]")


def normalize_answer(text: str) -> str:
    """Lower-case; full-width forms folded (NFKC); punctuation removed (ASCII and CJK: 。，《》“” ...); English
    articles dropped (as SQuAD's scorer does); whitespace collapsed; and, when the text has Chinese (or other
    CJK) characters, no spaces at all, since Chinese does not separate words."""
    text = " ".join(_clean(text).split())
    return text.replace(" ", "") if _CJK.search(text) else text


def _clean(text: str) -> str:
    """NFKC-folded, lower-cased, without punctuation or English articles (SQuAD's normalisation). Punctuation:
    Unicode's (CJK's included) and every ASCII mark SQuAD's scorer drops (`string.punctuation`: also ` ^ $ + < = >
    | ~, which Unicode calls symbols; an answer's "`clone`" must match the reference "clone")."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return _ARTICLES.sub(" ", "".join("" if unicodedata.category(ch).startswith("P") or ch in _ASCII_PUNCTUATION
                                      else ch for ch in text))


def contains_answer(answer: str, references: Iterable[str]) -> bool:
    """True when the normalised answer contains a normalised reference (as whole words for non-CJK references;
    as a plain substring, spaces removed, when either side has CJK characters)."""
    got = normalize_answer(_CITATIONS.sub(" ", answer))
    for ref in references:
        want = normalize_answer(ref)
        if not want:
            continue
        if _CJK.search(want) or _CJK.search(got):
            if want.replace(" ", "") in got.replace(" ", ""):
                return True
        elif f" {want} " in f" {got} ":
            return True
    return False


_TOKENS = re.compile(f"[{HAN}{KANA_HANGUL}]|[^\\s{HAN}{KANA_HANGUL}]+")


def answer_tokens(text: str) -> list[str]:
    """SQuAD's tokens of a normalised text, citation marks ([1], [2, 3]) removed first: words, and each CJK
    character on its own (as CMRC2018's scorer splits Chinese)."""
    return _TOKENS.findall(_clean(_CITATIONS.sub(" ", str(text))))


def exact_match(answer: str, references: Iterable[str]) -> float:
    """1.0 when the answer, normalised as SQuAD does (and its citation marks removed), equals a reference."""
    got = answer_tokens(answer)
    return float(any(got == answer_tokens(ref) for ref in references))


def token_f1(answer: str, references: Iterable[str]) -> float:
    """SQuAD's F1: the best, over the references, of the harmonic mean of token precision and recall."""
    got = answer_tokens(answer)
    best = 0.0
    for ref in references:
        want = answer_tokens(ref)
        common = sum((Counter(got) & Counter(want)).values())
        if common:
            precision, recall = common / len(got), common / len(want)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
