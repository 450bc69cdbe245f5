"""Conformance with the LangChain ecosystem: the retriever passes langchain-tests' standard retriever suite (in
each retrieval mode, on a real store), and the chain streams through `astream_events`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from rag.retrieval.hybrid import HybridRetriever


class _StandardSuite(RetrieversIntegrationTests):
    mode = "hybrid"

    @pytest.fixture(autouse=True)
    def _real_store(self, small_rag):
        # The suite builds retrievers from a class and its keyword arguments; ours need the session's real
        # store (data/ ingested) and embedding model, which only exist once fixtures have run.
        type(self)._params = {"store": small_rag.store, "embeddings": small_rag.embeddings, "mode": self.mode}

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return HybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return self._params

    @property
    def retriever_query_example(self) -> str:
        return "What is CRAN?"


class TestHybridRetriever(_StandardSuite):
    mode = "hybrid"


class TestDenseRetriever(_StandardSuite):
    mode = "dense"


class TestBM25Retriever(_StandardSuite):
    mode = "bm25"


def test_chain_streams_through_astream_events(small_rag):
    """Every token of the answer shows up as a stream event of the chain, and the model's own streaming is
    visible to callbacks (what LangServe, LangGraph and tracing UIs rely on)."""
    chain = small_rag.chain

    async def collect():
        events = []
        async for event in chain.astream_events("What is CRAN?", version="v2"):
            events.append(event)
        return events

    events = asyncio.run(collect())
    kinds = [e["event"] for e in events]
    assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
    model_tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert len(model_tokens) > 1  # streamed token by token, not one block at the end
    retrieved = [e["data"]["output"] for e in events if e["event"] == "on_retriever_end"]
    # The retriever's documents are visible as an event: the ones it finds when called alone.
    assert [[d.id for d in docs] for docs in retrieved] == [[d.id for d in small_rag.retriever.invoke("What is CRAN?")]]
    final = events[-1]["data"]["output"]
    # The chain's final output is what `invoke` returns, and its answer is exactly the streamed model tokens.
    assert set(final) >= {"answer", "sources", "cited", "refused"}
    assert final["answer"].strip() == "".join(model_tokens).strip()
    assert any(c["data"]["chunk"].get("answer") for c in events if c["event"] == "on_chain_stream" and c["name"] == "rag")
