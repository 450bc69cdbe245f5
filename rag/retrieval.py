"""A LangChain `BaseRetriever` over the store: dense (cosine over the embedder's vectors), lexical (BM25), or
both fused by weighted reciprocal rank. Every Document carries its cosine similarity in `metadata["score"]`."""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.prompts import language_of
from rag.store import Store

RRF_K = 60
# MiniLM has almost no Chinese vocabulary (most Chinese query tokens become [UNK]); equal-weight fusion lets
# its noise outvote BM25 on Chinese questions, so the dense list counts for little there.
DENSE_WEIGHT = {"en": 1.0, "zh": 0.2}


class HybridRetriever(BaseRetriever):
    """Top-k chunks. `mode`: "hybrid" (default), "dense" or "bm25". `source_glob` keeps only files whose path
    or name matches."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Store
    embeddings: Embeddings
    k: int = 4
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    source_glob: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any) -> list[Document]:
        k = kwargs.get("k", self.k)
        sources = self._sources()
        if sources is not None and not sources:
            return []  # no ingested file matches the filter
        vector = self.embeddings.embed_query(query)
        pool = max(4 * k, 20)
        lists: list[tuple[float, list[str]]] = []
        found: dict[str, tuple[str, dict, float]] = {}
        if self.mode in ("hybrid", "dense"):
            where = None if sources is None else {"source": {"$in": sources}} if len(sources) > 1 else {"source": sources[0]}
            dense = self.store.query(vector, pool if self.mode == "hybrid" else k, where=where)
            found.update({cid: (text, meta, score) for cid, text, meta, score in dense})
            lists.append((DENSE_WEIGHT[language_of(query)] if self.mode == "hybrid" else 1.0, [h[0] for h in dense]))
        if self.mode in ("hybrid", "bm25"):
            allowed = None
            if sources is not None:
                allowed = {cid for rec in self.store.files() if rec.source in sources for cid in rec.chunk_ids}
            lexical = self.store.lexical().search(query, pool if self.mode == "hybrid" else k, allowed=allowed)
            lists.append((1.0, [cid for cid, _ in lexical]))
        fused: dict[str, float] = {}
        for weight, ids in lists:
            for rank, cid in enumerate(ids):
                fused[cid] = fused.get(cid, 0.0) + weight / (RRF_K + rank + 1)
        top = sorted(fused, key=fused.__getitem__, reverse=True)[:k]
        found.update(self.store.get([cid for cid in top if cid not in found], vector))
        return [
            Document(page_content=found[cid][0], id=cid, metadata={**found[cid][1], "score": round(found[cid][2], 4)})
            for cid in top
            if cid in found
        ]

    def _sources(self) -> list[str] | None:
        if not self.source_glob:
            return None
        # Chroma's `where` has no glob; the manifest knows every source, so the glob becomes a list of paths.
        return [r.source for r in self.store.files()
                if fnmatch.fnmatch(r.source, self.source_glob) or fnmatch.fnmatch(r.source.rsplit("/", 1)[-1], self.source_glob)]
