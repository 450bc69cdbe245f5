"""The background server answers from the store as it is now: `rag ingest`, `delete` or `reset` in another
process moves the store's revision, and the next question then opens the store afresh (the model and the
embedder stay loaded). One revision read per question; nothing is reopened or rebuilt when nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rag.api import RAG
from rag.config import ConfigError
from rag.storage.chroma import forget_open_stores


def follow_store(app: Any) -> Callable[[], None]:
    """The queue's `before_turn`: swap in a freshly opened store when its revision moved; refuse an empty one."""
    seen = app.state.queue.rag.store.revision()

    def before_turn() -> None:
        nonlocal seen
        queue = app.state.queue
        revision = queue.rag.store.revision()
        if revision != seen:
            old = queue.rag
            forget_open_stores()  # embedded Chroma would otherwise search the vector index it loaded before
            # A new RAG over the same settings reuses the loaded model and question embedder (the light one: asking
            # for `embeddings` would load the full torch stack); its store, retriever and chain
            # are built on first use, reading what the other process wrote (vectors, manifest, BM25 index).
            # ...unless the store now records another embedding model (embedding_model "auto": an empty store whose
            # first ingest chose multilingual-e5-small): its questions are then embedded with that one.
            same = RAG(old.settings).embedding_model == old.embedding_model
            fresh = RAG(old.settings, llm=old.llm, **({"query_embeddings": old.query_embeddings} if same else {}))
            queue.rag = app.state.rag = fresh
            old.store.close()
            app.state.reopened += 1
            seen = revision
        if queue.rag.store.count() == 0:
            raise ConfigError(f"{queue.rag.settings.store}: the store is empty; run `rag ingest PATH` first")

    return before_turn
