"""A LangChain `BaseRetriever` over the store: dense (cosine over the embedder's vectors), lexical (BM25), or
both fused by weighted reciprocal rank, optionally diversified by maximal marginal relevance (MMR).

Every Document carries, in its metadata, `cosine` (similarity of its vector to the question's), `coverage` (the
IDF-weighted share of the question's words it contains, see `LexicalIndex.coverage`) and `score`, the relevance
that `min_score` judges: the cosine (or the embedder's own relevance, see `reads_and_relevance`), except where
the embedder does not read the question's language: for MiniLM and Chinese it is the coverage (MiniLM reads most
Chinese as [UNK], so its cosine does not tell a passage that answers from one that does not:
benchmarks/notes/eval-findings.md)."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.lang import language_of
from rag.retrieval import crosslingual
from rag.storage.store import Store

# Reciprocal-rank fusion constant. 20 rather than the customary 60: the top of each list counts more, which on
# SciFact (train) fused nDCG@10 0.7275 vs 0.7169 at 60, and changes nothing for Chinese (benchmarks/notes/eval-findings.md).
RRF_K = 20
# MiniLM has almost no Chinese vocabulary (64% of CMRC2018 question tokens become [UNK]): any weight on its list
# lets its noise outvote BM25 on Chinese questions (CMRC2018 hit@1 0.9712 BM25 alone, 0.9598 at weight 0.1,
# 0.9404 at 0.2). So for Chinese the dense list only orders what BM25 did not find (a fallback and tie-break).
DENSE_WEIGHT = {"en": 1.0, "zh": 0.0}
# Each list is read this deep (at least) before fusing, also when only k=4 chunks are wanted: documents that
# both lists rank moderately high are the point of fusion (SciFact nDCG@10 0.7199 with 20, 0.7247 with 100).
POOL_MIN = 100
# MMR: weight of relevance against novelty (LangChain's default), and candidates considered per chunk wanted.
MMR_LAMBDA = 0.5
MMR_FETCH = 4


class HybridRetriever(BaseRetriever):
    """Top-k chunks. `mode`: "hybrid" (default), "dense" or "bm25". `source_glob` keeps only files whose path
    or name matches. `mmr` picks the k chunks among the best 4k by maximal
    marginal relevance, so that near-duplicate passages do not crowd out the others."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Store
    embeddings: Embeddings
    k: int = 4
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    source_glob: str | None = None
    mmr: bool = False

    # Cross-lingual questions (rag/retrieval/crosslingual.py): `translate(question, language)` and the store's
    # `languages()`; None searches every question as typed.
    translate: Callable[[str, str], str] | None = None
    languages: Callable[[], dict[str, int]] | None = None
    relevance_floor: float = 0.0  # min_score: which of a mixed store's two lists' passages are fused first

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any) -> list[Document]:
        k = kwargs.get("k", self.k)
        mmr = bool(kwargs.get("mmr", self.mmr))
        if self.translate is None or self.languages is None:
            return self._search(query, k, mmr)
        return crosslingual.search(query, k, lambda q: self._search(q, k, mmr), self.translate, self.languages(),
                                   self.relevance_floor)

    def _search(self, query: str, k: int, mmr: bool) -> list[Document]:
        sources = self._sources()
        if sources is not None and not sources:
            return []  # no ingested file matches the filter
        vector = self.embeddings.embed_query(query)
        reads, relevance = reads_and_relevance(self.embeddings, language_of(query))
        want = MMR_FETCH * k if mmr else k
        pool = max(4 * want, POOL_MIN)
        found: dict[str, tuple[str, dict, float]] = {}
        fused: dict[str, float] = {}
        tie: dict[str, float] = {}  # the dense list's own reciprocal rank: orders what the weighted sum leaves tied
        if self.mode in ("hybrid", "dense"):
            where = None if sources is None else {"source": {"$in": sources}} if len(sources) > 1 else {"source": sources[0]}
            dense = self.store.query(vector, pool if self.mode == "hybrid" else want, where=where)
            found.update({cid: (text, meta, score) for cid, text, meta, score in dense})
            weight = (1.0 if reads else DENSE_WEIGHT.get(language_of(query), 1.0)) if self.mode == "hybrid" else 1.0
            for rank, (cid, *_rest) in enumerate(dense):
                fused[cid] = weight / (RRF_K + rank + 1)
                tie[cid] = 1.0 / (RRF_K + rank + 1)
        if self.mode in ("hybrid", "bm25"):
            allowed = None
            if sources is not None:
                allowed = {cid for rec in self.store.files() if rec.source in sources for cid in rec.chunk_ids}
            lexical = self.store.lexical().search(query, pool if self.mode == "hybrid" else want, allowed=allowed)
            for rank, (cid, _score) in enumerate(lexical):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
        top = sorted(fused, key=lambda c: (fused[c], tie.get(c, 0.0)), reverse=True)[:want]
        if mmr and len(top) > k:
            top = self._mmr(top, fused, vector, k, found)
        found.update(self.store.get([cid for cid in top if cid not in found], vector))
        top = [cid for cid in top if cid in found]
        coverage = self.store.lexical().coverage(query, {cid: found[cid][0] for cid in top}) if top else {}
        docs = []
        for cid in top:
            text, meta, cosine = found[cid]
            score = relevance(cosine) if reads else coverage[cid]
            docs.append(Document(page_content=text, id=cid, metadata={
                **meta, "score": round(score, 4), "cosine": round(cosine, 4), "coverage": round(coverage[cid], 4)}))
        return docs

    def _mmr(self, candidates: list[str], fused: dict[str, float], vector: list[float], k: int,
             found: dict[str, tuple[str, dict, float]]) -> list[str]:
        """Greedy maximal marginal relevance over `candidates` (best first): relevance is the fused score scaled
        to [0, 1] over the candidates; redundancy is the highest cosine similarity to a chunk already picked."""
        vecs: dict[str, list[float]] = {}
        for cid, (text, meta, emb) in self.store.vectors(candidates).items():
            vecs[cid] = emb
            found.setdefault(cid, (text, meta, _dot(vector, emb)))
        cands = [c for c in candidates if c in vecs]
        # Min-max over the candidates: reciprocal-rank scores are compressed (rank 1 and rank 8 differ by less than
        # 2x), so plain scaling would let an irrelevant but novel chunk beat a relevant one that repeats a little.
        hi, lo = max(fused[c] for c in cands), min(fused[c] for c in cands)
        relevance = {c: (fused[c] - lo) / (hi - lo) if hi > lo else 1.0 for c in cands}
        picked: list[str] = []
        nearest = {c: -math.inf for c in cands}  # highest similarity to a picked chunk
        while cands and len(picked) < k:
            def gain(c: str) -> float:
                return MMR_LAMBDA * relevance[c] - (1 - MMR_LAMBDA) * (nearest[c] if picked else 0.0)

            choice = max(cands, key=gain)  # ties: the better-ranked candidate (max keeps the first)
            picked.append(choice)
            cands.remove(choice)
            for c in cands:
                nearest[c] = max(nearest[c], _dot(vecs[c], vecs[choice]))
        return picked

    def _sources(self) -> list[str] | None:
        if not self.source_glob:
            return None
        # Chroma's `where` has no glob; the manifest knows every source, so the glob becomes a list of paths.
        return [r.source for r in self.store.files()
                if fnmatch.fnmatch(r.source, self.source_glob) or fnmatch.fnmatch(r.source.rsplit("/", 1)[-1], self.source_glob)]


def reads_and_relevance(embeddings: Embeddings, language: str) -> tuple[bool, Callable[[float], float]]:
    """Whether the embedder's vectors read `language` ("en", "zh"), and how its cosine becomes the relevance that
    min_score judges, through its `reads(language)` and `relevance(cosine, language)` methods (those of
    multilingual-e5-small); an embedder without them is taken as MiniLM: it reads English, not Chinese
    (DENSE_WEIGHT), and its cosine is the relevance."""
    reads, relevance = getattr(embeddings, "reads", None), getattr(embeddings, "relevance", None)
    judged = (lambda cosine: relevance(cosine, language)) if relevance else float
    return (reads(language) if reads else language != "zh"), judged


def _dot(a: list[float], b: list[float]) -> float:
    # The embedder's vectors are L2-normalised: the dot product is the cosine similarity.
    return float(sum(x * y for x, y in zip(a, b)))
