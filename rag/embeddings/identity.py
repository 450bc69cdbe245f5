"""The identity under which the store records an embedding model (imports nothing: a command that only compares
it, such as a re-ingest with nothing to do, loads no embedding code)."""

from __future__ import annotations


def embedding_identity(name: str, url: str | None) -> str:
    """What the store records as its embedding model: the name for a local model (unchanged, so existing stores
    stay valid), name and URL for a remote one, so that vectors of two different models never mix."""
    return f"{name} @ {url.rstrip('/')}" if url else name
