"""The store: a Chroma collection plus a SQLite manifest of ingested files, kept consistent with each
other (per-file replace that survives a crash) and guarded by a lock against concurrent writers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings

MANIFEST_NAME = "manifest.sqlite3"
LOCK_NAME = "write.lock"
# Held by `rag serve` over an embedded store: embedded Chroma keeps its index in the serving process, so
# another process writing to the same folder would corrupt what the server sees.
SERVE_LOCK_NAME = "serve.lock"
# Chroma rejects larger batches (its limit here was 5,461); stay well below.
WRITE_BATCH = 1000


class StoreError(Exception):
    """A store that cannot be opened or written."""


@dataclass
class FileRecord:
    """One ingested source file as the manifest knows it."""

    source: str
    size: int
    mtime_ns: int
    sha256: str
    pages: int
    chunks: int
    fingerprint: str
    status: str  # "done", or "pending" while its chunks are being replaced
    ingested_at: float
    chunk_ids: list[str]


def chunk_id(source: str, index: int) -> str:
    """Deterministic chunk id: re-adding a file's chunks overwrites them instead of duplicating."""
    return f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{index:06d}"


class Manifest:
    """SQLite table of ingested files; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS files (
                source TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT, pages INTEGER,
                chunks INTEGER, fingerprint TEXT, status TEXT, ingested_at REAL, chunk_ids TEXT)"""
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # Files that could not be read, as they were then: an unchanged one is not read again on the next run.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS failures (source TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
            "fingerprint TEXT, reason TEXT)"
        )

    def close(self) -> None:
        self._db.close()

    def get(self, source: str) -> FileRecord | None:
        row = self._db.execute("SELECT * FROM files WHERE source = ?", (source,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[FileRecord]:
        return [_record(r) for r in self._db.execute("SELECT * FROM files ORDER BY source")]

    def put(self, rec: FileRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?)",
            (rec.source, rec.size, rec.mtime_ns, rec.sha256, rec.pages, rec.chunks, rec.fingerprint, rec.status,
             rec.ingested_at, json.dumps(rec.chunk_ids)),
        )

    def set_status(self, source: str, status: str) -> None:
        self._db.execute("UPDATE files SET status = ? WHERE source = ?", (status, source))

    def remove(self, source: str) -> None:
        self._db.execute("DELETE FROM files WHERE source = ?", (source,))

    def failures(self) -> dict[str, tuple[int, int, str, str]]:
        """source -> (size, mtime_ns, fingerprint, reason) of files that failed."""
        return {r[0]: tuple(r[1:]) for r in self._db.execute("SELECT * FROM failures")}

    def put_failure(self, source: str, size: int, mtime_ns: int, fingerprint: str, reason: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?)", (source, size, mtime_ns, fingerprint, reason))

    def clear_failure(self, source: str | None = None) -> None:
        """Forget one file's failure, or all of them (None)."""
        if source is None:
            self._db.execute("DELETE FROM failures")
        else:
            self._db.execute("DELETE FROM failures WHERE source = ?", (source,))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def _record(row: Sequence[Any]) -> FileRecord:
    return FileRecord(*row[:9], chunk_ids=json.loads(row[9] or "[]"))


class Store:
    """A Chroma collection (embedded under `settings.store`, or on a Chroma server) and its manifest."""

    def __init__(self, settings: Settings, embedding_name: str) -> None:
        self.settings = settings
        self.root = Path(settings.store)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror})") from None
        self.embedding_name = embedding_name
        self.client = _client(settings)
        self.server = server_url(settings)
        if self.server:
            # Every call goes over the network: a lost server becomes a one-line StoreError naming it.
            self.client = _ServerCall(self.client, self.server)
        self.collection = self._open_collection()
        found = (self.collection.metadata or {}).get("embedding_model")
        if found and found != embedding_name:
            raise StoreError(
                f"{self.root}: store was built with embedding model {found!r}, not {embedding_name!r}; "
                "run `rag reset` (then ingest again) or choose another --store"
            )
        self.manifest = Manifest(self.root / MANIFEST_NAME)
        self._lexical = None
        self._lexical_lock = threading.Lock()  # a request and an ingest may both find the index stale
        self._serving: Any = None

    def serve(self) -> None:
        """Claim an embedded store for this process (`rag serve`) until it exits: ingests from other
        processes are refused, and a second server on the same folder too. A Chroma server needs no claim."""
        if self.server or self._serving is not None:
            return
        fh = (self.root / SERVE_LOCK_NAME).open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StoreError(f"{self.root}: already served by another `rag serve`; stop it, or use another --store") from None
        self._serving = fh  # the lock lives as long as the file stays open, released when the process dies

    def _refuse_if_served_elsewhere(self) -> None:
        if self.server or self._serving is not None:
            return
        path = self.root / SERVE_LOCK_NAME
        if not path.exists():
            return
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"{self.root}: this store is being served by `rag serve`; ingest through it "
                    "(the page's upload, or POST /api/ingest) or stop it first"
                ) from None

    # --- writing, file by file ---
    @contextlib.contextmanager
    def writer(self, wait: bool = False) -> Iterator[None]:
        """Hold the store's write lock; a second writer waits (wait=True) or gets a StoreError."""
        self._refuse_if_served_elsewhere()
        fh = (self.root / LOCK_NAME).open("a+")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise StoreError(f"{self.root}: another ingest is writing to this store; wait for it to finish") from None
            yield
        finally:
            fh.close()  # closing releases the lock, also when the process dies

    def replace_file(self, rec: FileRecord, texts: list[str], vectors: list[list[float]], metadatas: list[dict]) -> None:
        """Swap a file's chunks for new ones. The manifest says 'pending' until the last chunk is in, so a
        crash at any point is repaired by the next run (which redoes pending files)."""
        ids = [chunk_id(rec.source, i) for i in range(len(texts))]
        old = self.manifest.get(rec.source)
        if old is not None:
            self.manifest.set_status(rec.source, "pending")
        else:
            self.manifest.put(FileRecord(**{**rec.__dict__, "status": "pending", "chunk_ids": []}))
        self.collection.delete(where={"source": rec.source})
        for start in range(0, len(ids), WRITE_BATCH):
            end = start + WRITE_BATCH
            self.collection.upsert(ids=ids[start:end], embeddings=vectors[start:end], documents=texts[start:end], metadatas=metadatas[start:end])
        rec.chunk_ids, rec.chunks, rec.status, rec.ingested_at = ids, len(ids), "done", time.time()
        self.manifest.put(rec)
        self._bump()

    def touch(self, rec: FileRecord) -> None:
        """Record a new size/mtime for a file whose content did not change."""
        self.manifest.put(rec)

    def delete_file(self, source: str) -> int:
        """Remove a file's chunks and its manifest entry; returns how many chunks went."""
        rec = self.manifest.get(source)
        n = len(self.collection.get(where={"source": source}, include=[])["ids"])
        if rec is not None:
            self.manifest.set_status(source, "pending")
        self.collection.delete(where={"source": source})
        self.manifest.remove(source)
        self._bump()
        return n

    def reset(self) -> None:
        """Drop every chunk and manifest entry."""
        self.client.delete_collection(self.settings.collection)
        self.collection = self._open_collection()
        for rec in self.manifest.all():
            self.manifest.remove(rec.source)
        self.manifest.clear_failure()
        self._bump()

    def _bump(self) -> None:
        # Any change of content gets a new revision; the lexical index compares it to the one it was built at.
        revision = uuid.uuid4().hex
        self.manifest.set_meta("revision", revision)
        if self.server:
            # Other machines using the same Chroma server have their own manifest: the revision goes with the
            # collection too, so that their lexical index follows this change. `modify` replaces the metadata
            # and Chroma refuses any "hnsw:" key there (the distance stays in the collection's configuration).
            self.collection.modify(metadata={"embedding_model": self.embedding_name, "rag_revision": revision})

    def _open_collection(self):
        meta = {"hnsw:space": "cosine", "embedding_model": self.embedding_name}
        collection = self.client.get_or_create_collection(self.settings.collection, metadata=meta, embedding_function=None)
        if self.server:
            # Another client's `rag reset` replaces the collection (a new id): calls on the old one are retried once
            # on the collection of the same name.
            collection._reopen = lambda: self.client.get_collection(self.settings.collection)._target
        return collection

    def revision(self) -> str:
        """The store's content revision: the collection's on a Chroma server (shared by every client), else the
        manifest's."""
        if self.server:
            # Fetched afresh: another client may have changed the collection, or reset it (a new collection id).
            self.collection = self._open_collection()
            return str((self.collection.metadata or {}).get("rag_revision", ""))
        return self.manifest.get_meta("revision") or ""

    # --- the lexical index ---
    def lexical(self):
        """The BM25 index of every chunk, rebuilt first when the store changed since it was built."""
        with self._lexical_lock:
            return self._current_lexical()

    def _current_lexical(self):
        from rag.storage.lexical import LexicalIndex

        if self._lexical is None:
            self._lexical = LexicalIndex(self.root / "bm25")
            self._lexical.load()
        revision = self.revision()
        if self._lexical.revision != revision:
            ids, texts = [], []
            for start in range(0, self.collection.count(), 5000):
                page = self.collection.get(include=["documents"], limit=5000, offset=start)
                ids += page["ids"]
                texts += page["documents"]
            self._lexical.build(ids, texts, revision)
        return self._lexical

    def get(self, ids: list[str], vector: list[float] | None = None) -> dict[str, tuple[str, dict, float]]:
        """Chunks by id as id -> (text, metadata, cosine similarity to `vector`, or 0)."""
        if not ids:
            return {}
        include = ["documents", "metadatas"] + (["embeddings"] if vector is not None else [])
        res = self.collection.get(ids=ids, include=include)
        out = {}
        for i, cid in enumerate(res["ids"]):
            sim = float(sum(a * b for a, b in zip(vector, res["embeddings"][i]))) if vector is not None else 0.0
            out[cid] = (res["documents"][i], res["metadatas"][i] or {}, sim)
        return out

    # --- files that could not be read, remembered so that an unchanged one is not read again ---
    def failures(self) -> dict[str, tuple[int, int, str, str]]:
        """source -> (size, mtime_ns, fingerprint, reason) of the files that failed."""
        return self.manifest.failures()

    def remember_failure(self, source: str, size: int, mtime_ns: int, fingerprint: str, reason: str) -> None:
        self.manifest.put_failure(source, size, mtime_ns, fingerprint, reason)

    def forget_failure(self, source: str | None = None) -> None:
        """Forget one file's failure, or all of them (None)."""
        self.manifest.clear_failure(source)

    # --- reading ---
    def vectors(self, ids: list[str]) -> dict[str, tuple[str, dict, list[float]]]:
        """Chunks by id with their stored vectors: id -> (text, metadata, vector)."""
        if not ids:
            return {}
        res = self.collection.get(ids=ids, include=["embeddings", "documents", "metadatas"])
        return {cid: (res["documents"][i], res["metadatas"][i] or {}, [float(x) for x in res["embeddings"][i]])
                for i, cid in enumerate(res["ids"])}

    def count(self) -> int:
        return self.collection.count()

    def files(self) -> list[FileRecord]:
        return self.manifest.all()

    def query(self, vector: list[float], k: int, where: dict | None = None) -> list[tuple[str, str, dict, float]]:
        """Nearest chunks as (id, text, metadata, cosine similarity), best first."""
        if self.collection.count() == 0:
            return []
        res = self.collection.query(query_embeddings=[vector], n_results=k, where=where, include=["documents", "metadatas", "distances"])
        return [(i, t, m or {}, 1.0 - d) for i, t, m, d in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0])]

    def close(self) -> None:
        self.manifest.close()
        if self._serving is not None:
            self._serving.close()  # gives up a `rag serve` claim
            self._serving = None


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
