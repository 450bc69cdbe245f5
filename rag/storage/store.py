"""The store: a Chroma collection, the manifest of ingested files and the lexical index, kept consistent with
each other (per-file replace that survives a crash) and guarded by a lock against concurrent writers. The
other stages use it through its methods only."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.storage.chroma import Collection, chunk_id, server_url
from rag.storage.errors import StoreError
from rag.storage.manifest import MANIFEST_NAME, FileRecord, Manifest

__all__ = ["FileRecord", "Store", "StoreError", "chunk_id", "server_url"]

LOCK_NAME = "write.lock"
# Held by `rag serve` over an embedded store: embedded Chroma keeps its index in the serving process, so
# another process writing to the same folder would corrupt what the server sees.
SERVE_LOCK_NAME = "serve.lock"


class Store:
    """A Chroma collection (embedded under `settings.store`, or on a Chroma server) and its manifest."""

    def __init__(self, settings: Settings, embedding_name: str) -> None:
        self.root = Path(settings.store)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror})") from None
        self._chunks = Collection(settings, embedding_name)
        self.server = self._chunks.server
        found = self._chunks.embedding_model()
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
        self._chunks.delete_source(rec.source)
        self._chunks.write(ids, vectors, texts, metadatas)
        rec.chunk_ids, rec.chunks, rec.status, rec.ingested_at = ids, len(ids), "done", time.time()
        self.manifest.put(rec)
        self._bump()

    def touch(self, rec: FileRecord) -> None:
        """Record a new size/mtime for a file whose content did not change."""
        self.manifest.put(rec)

    def delete_file(self, source: str) -> int:
        """Remove a file's chunks and its manifest entry; returns how many chunks went."""
        rec = self.manifest.get(source)
        n = self._chunks.count_source(source)
        if rec is not None:
            self.manifest.set_status(source, "pending")
        self._chunks.delete_source(source)
        self.manifest.remove(source)
        self._bump()
        return n

    def reset(self) -> None:
        """Drop every chunk and manifest entry."""
        self._chunks.drop()
        for rec in self.manifest.all():
            self.manifest.remove(rec.source)
        self.manifest.clear_failure()
        self._bump()

    def _bump(self) -> None:
        # Any change of content gets a new revision; the lexical index compares it to the one it was built at.
        revision = uuid.uuid4().hex
        self.manifest.set_meta("revision", revision)
        if self.server:
            self._chunks.set_server_revision(revision)

    def revision(self) -> str:
        """The store's content revision: the collection's on a Chroma server (shared by every client), else the
        manifest's."""
        if self.server:
            return self._chunks.server_revision()
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
            self._lexical.build(*self._chunks.texts(), revision)
        return self._lexical

    def get(self, ids: list[str], vector: list[float] | None = None) -> dict[str, tuple[str, dict, float]]:
        """Chunks by id as id -> (text, metadata, cosine similarity to `vector`, or 0)."""
        if not ids:
            return {}
        got = self._chunks.get(ids, with_vectors=vector is not None)
        # The vectors are L2-normalised: the dot product is the cosine similarity.
        return {cid: (text, meta, float(sum(a * b for a, b in zip(vector, vec))) if vector is not None else 0.0)
                for cid, (text, meta, vec) in got.items()}

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
        return self._chunks.get(ids, with_vectors=True) if ids else {}

    def count(self) -> int:
        return self._chunks.count()

    def files(self) -> list[FileRecord]:
        return self.manifest.all()

    def query(self, vector: list[float], k: int, where: dict | None = None) -> list[tuple[str, str, dict, float]]:
        """Nearest chunks as (id, text, metadata, cosine similarity), best first."""
        return self._chunks.query(vector, k, where)

    @property
    def collection(self) -> Any:
        """The raw Chroma collection, for tests and diagnostics only: the stages use the methods above."""
        return self._chunks.raw

    def close(self) -> None:
        self.manifest.close()
        if self._serving is not None:
            self._serving.close()  # gives up a `rag serve` claim
            self._serving = None
