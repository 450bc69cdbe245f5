"""rag: a private, local document-QA chatbot (ingest a folder, ask it questions, get cited answers)."""

__version__ = "0.1.0"

__all__ = ["RAG", "Settings", "Answer", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import rag` (and `rag --help`) never pulls torch, chromadb or llama.cpp.
    if name == "RAG":
        from rag.api import RAG

        return RAG
    if name == "Answer":
        from rag.answer.chain import Answer

        return Answer
    if name == "Settings":
        from rag.config import Settings

        return Settings
    raise AttributeError(name)
