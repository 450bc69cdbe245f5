"""Retrieval: a LangChain `BaseRetriever` that finds the chunks for a question (dense, BM25 or both fused)."""

from rag.retrieval.hybrid import HybridRetriever

__all__ = ["HybridRetriever"]
