"""The vector side of the store: a Chroma collection, embedded under the store folder or on a Chroma server,
behind the few calls the store makes (write a file's chunks, delete them, query, fetch by id)."""

from __future__ import annotations

import hashlib
from typing import Any

from rag.config import Settings
from rag.storage.errors import StoreError

# Chroma rejects larger batches (its limit here was 5,461); stay well below.
WRITE_BATCH = 1000


def chunk_id(source: str, index: int) -> str:
    """Deterministic chunk id: re-adding a file's chunks overwrites them instead of duplicating."""
    return f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{index:06d}"


class Collection:
    """One Chroma collection of chunks (id, vector, text, metadata) for one embedding model."""

    def __init__(self, settings: Settings, embedding_name: str) -> None:
        self.name = settings.collection
        self.embedding_name = embedding_name
        self.server = server_url(settings)
        self._client = _client(settings)
        if self.server:
            # Every call goes over the network: a lost server becomes a one-line StoreError naming it.
            self._client = _ServerCall(self._client, self.server)
        self._chroma = self._open()

    def _open(self):
        meta = {"hnsw:space": "cosine", "embedding_model": self.embedding_name}
        collection = self._client.get_or_create_collection(self.name, metadata=meta, embedding_function=None)
        if self.server:
            # Another client's `rag reset` replaces the collection (a new id): calls on the old one are retried once
            # on the collection of the same name.
            collection._reopen = lambda: self._client.get_collection(self.name)._target
        return collection

    def embedding_model(self) -> str | None:
        """The embedding model the collection was built with (None: a new collection)."""
        return (self._chroma.metadata or {}).get("embedding_model")

    def server_revision(self) -> str:
        """The content revision recorded with a collection on a Chroma server, fetched afresh: another client may
        have changed the collection, or reset it (a new collection id)."""
        self._chroma = self._open()
        return str((self._chroma.metadata or {}).get("rag_revision", ""))

    def set_server_revision(self, revision: str) -> None:
        # Other machines using the same Chroma server have their own manifest: the revision goes with the
        # collection too, so that their lexical index follows this change. `modify` replaces the metadata
        # and Chroma refuses any "hnsw:" key there (the distance stays in the collection's configuration).
        self._chroma.modify(metadata={"embedding_model": self.embedding_name, "rag_revision": revision})

    def write(self, ids: list[str], vectors: list[list[float]], texts: list[str], metadatas: list[dict]) -> None:
        for start in range(0, len(ids), WRITE_BATCH):
            end = start + WRITE_BATCH
            self._chroma.upsert(ids=ids[start:end], embeddings=vectors[start:end], documents=texts[start:end],
                                metadatas=metadatas[start:end])

    def count_source(self, source: str) -> int:
        return len(self._chroma.get(where={"source": source}, include=[])["ids"])

    def delete_source(self, source: str) -> None:
        self._chroma.delete(where={"source": source})

    def drop(self) -> None:
        """Delete every chunk (the collection is dropped and made anew)."""
        self._client.delete_collection(self.name)
        self._chroma = self._open()

    def count(self) -> int:
        return self._chroma.count()

    def texts(self, page: int = 5000) -> tuple[list[str], list[str]]:
        """Every chunk's id and text, read in pages."""
        ids, texts = [], []
        for start in range(0, self._chroma.count(), page):
            got = self._chroma.get(include=["documents"], limit=page, offset=start)
            ids += got["ids"]
            texts += got["documents"]
        return ids, texts

    def get(self, ids: list[str], with_vectors: bool = False) -> dict[str, tuple[str, dict, list[float] | None]]:
        """Chunks by id: id -> (text, metadata, vector or None)."""
        include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
        res = self._chroma.get(ids=ids, include=include)
        return {cid: (res["documents"][i], res["metadatas"][i] or {},
                      [float(x) for x in res["embeddings"][i]] if with_vectors else None)
                for i, cid in enumerate(res["ids"])}

    def query(self, vector: list[float], k: int, where: dict | None = None) -> list[tuple[str, str, dict, float]]:
        """Nearest chunks as (id, text, metadata, cosine similarity), best first."""
        if self._chroma.count() == 0:
            return []
        res = self._chroma.query(query_embeddings=[vector], n_results=k, where=where,
                                 include=["documents", "metadatas", "distances"])
        return [(i, t, m or {}, 1.0 - d)
                for i, t, m, d in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0])]

    @property
    def raw(self) -> Any:
        """The Chroma collection itself, for tests and diagnostics."""
        return self._chroma


def forget_open_stores() -> None:
    """Make the next embedded collection opened in this process read its folder afresh. Chroma shares one
    in-memory system per folder among a process's clients, and its vector index there does not see what
    another process wrote since; a long-lived reader (the background server) calls this, then opens a new
    `Store`. Stores already open keep working on what they had."""
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def server_url(settings: Settings) -> str | None:
    """http://host:port of the Chroma server, or None for the embedded store."""
    return f"http://{settings.chroma_host}:{settings.chroma_port}" if settings.chroma_host else None


def _unreachable(url: str, note: str = "") -> str:
    from urllib.parse import urlparse

    return (f"cannot reach the Chroma server at {url}{note}: start it with "
            f"`chroma run --path DIR --port {urlparse(url).port}` or unset RAG_CHROMA_URL (or chroma_host)")


def _client(settings: Settings):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    url = server_url(settings)
    try:
        if url:
            return chromadb.HttpClient(host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings)
        return chromadb.PersistentClient(path=str(settings.store), settings=chroma_settings)
    except Exception as exc:  # chromadb raises plain exceptions for unreachable servers and bad folders
        if url and "connect" in str(exc).lower():
            raise StoreError(_unreachable(url)) from None
        where = url or str(settings.store)
        raise StoreError(f"{where}: cannot open the Chroma store ({type(exc).__name__}: {exc})") from None


class _ServerCall:
    """Wraps a Chroma HTTP client or collection: the objects it returns are wrapped too, and a connection
    failure on any call becomes a one-line StoreError that names the server (the CLI prints it, no traceback)."""

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url
        self._reopen: Any = None

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx
            from chromadb.errors import NotFoundError

            try:
                try:
                    result = value(*args, **kwargs)
                except NotFoundError:
                    if self._reopen is None:
                        raise
                    self._target = self._reopen()
                    result = getattr(self._target, name)(*args, **kwargs)
            except httpx.TransportError:
                raise StoreError(_unreachable(self._url, " (it stopped answering)")) from None
            # Collections come back wrapped; plain results (ids, documents, counts) as they are.
            return _ServerCall(result, self._url) if type(result).__name__ == "Collection" else result

        return call
