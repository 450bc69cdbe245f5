"""The identity under which the store records an embedding model, and the packaged models' names (imports
nothing: a command that only compares them, such as a re-ingest with nothing to do, loads no embedding code)."""

from __future__ import annotations

AUTO = "auto"  # a new store takes MINILM, or E5 when its first ingest holds Chinese text (rag.ingest.embedder)
MINILM = "all-MiniLM-L6-v2"
E5 = "multilingual-e5-small"


def tokenizer_model(name: str) -> str:
    """The sentence-transformers model whose tokenizer measures chunks: MiniLM's for e5 (whose engine has no
    tokenizer.json), so that an e5 store holds the very chunks a MiniLM store would."""
    return MINILM if name in (AUTO, E5) else name


def embedding_identity(name: str, url: str | None) -> str:
    """What the store records as its embedding model: the name for a local model (unchanged, so existing stores
    stay valid), name and URL for a remote one, so that vectors of two different models never mix."""
    return f"{name} @ {url.rstrip('/')}" if url else name


def remote_of(identity: str) -> tuple[str, str] | None:
    """(name, url) when a recorded identity names a remote model (`embedding_identity` with a URL), else None."""
    name, sep, url = identity.partition(" @ ")
    return (name, url) if sep else None
