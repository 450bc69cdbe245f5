"""The store: the vector collection (Chroma, embedded or on a server), the manifest of ingested files and the
lexical (BM25) index, kept consistent by one `Store` that the other stages use through a few methods."""

from rag.storage.errors import StoreError
from rag.storage.store import FileRecord, Store, chunk_id

__all__ = ["FileRecord", "Store", "StoreError", "chunk_id"]
