"""A LangChain `BaseRetriever` over the store: the question is embedded and the nearest chunks come back
as Documents carrying their cosine similarity in `metadata["score"]`."""

from __future__ import annotations

import fnmatch
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.store import Store


class DenseRetriever(BaseRetriever):
    """Top-k chunks by cosine similarity; `source_glob` keeps only files whose path matches it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Store
    embeddings: Embeddings
    k: int = 4
    source_glob: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any) -> list[Document]:
        k = kwargs.get("k", self.k)
        vector = self.embeddings.embed_query(query)
        where = self._where()
        if self.source_glob and where is None:
            return []  # no ingested file matches the filter
        hits = self.store.query(vector, k, where=where)
        return [Document(page_content=text, metadata={**meta, "score": round(score, 4)}) for text, meta, score in hits]

    def _where(self) -> dict | None:
        if not self.source_glob:
            return None
        # Chroma's `where` has no glob; the manifest knows every source, so turn the glob into an `$in`.
        sources = [r.source for r in self.store.files() if fnmatch.fnmatch(r.source, self.source_glob)
                   or fnmatch.fnmatch(r.source.rsplit("/", 1)[-1], self.source_glob)]
        if not sources:
            return None
        return {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": sources}}
