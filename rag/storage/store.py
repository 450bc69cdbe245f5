"""The store: a Chroma collection, the manifest of ingested files and the lexical index, kept consistent with
each other (a file's chunks, manifest entry and BM25 postings replaced together, surviving a crash) and guarded by
a lock against concurrent writers. The other stages use it through its methods only."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import Settings
from rag.lang import language_of
from rag.storage.chroma import Collection, chunk_id, server_url
from rag.storage.errors import StoreError
from rag.storage.manifest import MANIFEST_NAME, FileRecord, Manifest

# Files whose language languages() reads: enough to see a second language that more than ~1 file in 500 is in.
LANGUAGE_SAMPLE = 500

if TYPE_CHECKING:
    from rag.storage.lexical import LexicalIndex

__all__ = ["FileRecord", "Store", "StoreError", "chunk_id", "server_url"]

LOCK_NAME = "write.lock"
# Held by `rag serve` over an embedded store: embedded Chroma keeps its index in the serving process, so
# another process writing to the same folder would corrupt what the server sees.
SERVE_LOCK_NAME = "serve.lock"
EMBEDDING_MODEL_KEY = "embedding_model"  # manifest meta: the model an embedded store's vectors are from


class Store:
    """A Chroma collection (embedded under `settings.store`, or on a Chroma server) and its manifest."""

    def __init__(self, settings: Settings, embedding_name: str) -> None:
        self.root = Path(settings.store)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror})") from None
        self.manifest = Manifest(self.root / MANIFEST_NAME)
        self.server = server_url(settings)
        self._settings, self._embedding_name = settings, embedding_name
        self._collection: Collection | None = None
        self._collection_lock = threading.Lock()
        # An embedded store's model is also in its manifest: checked here without opening Chroma (a second import),
        # which is opened when first used. A server's collection is the truth for every machine: opened now.
        recorded = None if self.server else self.manifest.get_meta(EMBEDDING_MODEL_KEY)
        if recorded is None:
            self.open()  # and check the model the collection records
        else:
            self._check_model(recorded, empty=lambda: not self.manifest.has_files())
        self._lexical: LexicalIndex | None = None
        self._languages: tuple[str, dict[str, int]] | None = None  # (revision, counts): see languages()
        self._lexical_lock = threading.Lock()  # a request and an ingest may both find the index stale
        self._changes = 0  # changes under way in this process: their index is updated when each one ends
        self.lexical_rebuilds = 0  # times the BM25 index was rebuilt from every chunk in Chroma (tests, diagnostics)
        self._serving: Any = None

    @property
    def _chunks(self) -> Collection:
        """The Chroma collection, opened on first use (a re-ingest with nothing to do never imports chromadb)."""
        with self._collection_lock:
            if self._collection is None:
                chunks = Collection(self._settings, self._embedding_name)
                found = chunks.embedding_model() or self._embedding_name
                self._check_model(found, empty=lambda: chunks.count() == 0)
                if found != self._embedding_name:
                    chunks.drop()  # empty: made anew under this model
                    found = self._embedding_name
                if not self.server and self.manifest.get_meta(EMBEDDING_MODEL_KEY) != found:
                    self.manifest.set_meta(EMBEDDING_MODEL_KEY, found)
                self._collection = chunks
            return self._collection

    def open(self) -> None:
        """Open the vector collection now, rather than on first use (to overlap its import with other work)."""
        self._chunks  # noqa: B018

    def _check_model(self, found: str, empty: Callable[[], bool]) -> None:
        # A store with nothing in it (opened for a question before any ingest, or emptied) takes the model of its
        # first ingest, which `embedding_model = "auto"` may choose from the files' language.
        if found != self._embedding_name and not empty():
            raise StoreError(
                f"{self.root}: store was built with embedding model {found!r}, not {self._embedding_name!r}; "
                "run `rag reset` (then ingest again) or choose another --store"
            )

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
        """Swap a file's chunks for new ones, in Chroma and in the BM25 index. The manifest says 'pending' until
        the last chunk and the index are in, so a crash at any point is repaired by the next run (which redoes
        pending files and, the revision having moved, rebuilds the index)."""
        ids = [chunk_id(rec.source, i) for i in range(len(texts))]
        old = self.manifest.get(rec.source)
        with self._change() as index:
            if old is not None:
                self.manifest.set_status(rec.source, "pending")
            else:
                self.manifest.put(FileRecord(**{**rec.__dict__, "status": "pending", "chunk_ids": []}))
            self._chunks.delete_source(rec.source)
            self._chunks.write(ids, vectors, texts, metadatas)
            revision = self._update_lexical(index, rec.source, ids, texts)
            rec.chunk_ids, rec.chunks, rec.status, rec.ingested_at = ids, len(ids), "done", time.time()
            self.manifest.put(rec)
            self._bump(revision)

    def relabel_file(self, old_source: str, source: str, size: int, mtime_ns: int) -> int | None:
        """A renamed or moved file (same content): its chunks, texts and vectors as stored (nothing re-embedded),
        go under `source` (new size and mtime), in Chroma, the BM25 index and the manifest. The old entry is
        marked 'pending' first, so a crash at any point leaves what the next ingest repairs: the old name, gone
        from disk, is pruned; the new one, if not committed, is read again. Returns how many chunks moved; None,
        changing nothing, when the old entry is not complete (absent, 'pending', chunks missing in Chroma)."""
        old = self.manifest.get(old_source)
        if old is None or old.status != "done":
            return None
        got = self._chunks.get(old.chunk_ids, with_vectors=True) if old.chunk_ids else {}
        if len(got) != len(old.chunk_ids):
            return None
        chunks = [got[cid] for cid in old.chunk_ids]
        self.manifest.set_status(old_source, "pending")
        moved = FileRecord(**{**old.__dict__, "source": source, "size": size, "mtime_ns": mtime_ns})
        self.replace_file(moved, [text for text, _, _ in chunks], [vec for _, _, vec in chunks],
                          [{**meta, "source": source} for _, meta, _ in chunks])
        self.delete_file(old_source)
        return len(chunks)

    def touch(self, rec: FileRecord) -> None:
        """Record a new size/mtime for a file whose content did not change."""
        self.manifest.put(rec)

    def delete_file(self, source: str) -> int:
        """Remove a file's chunks and its manifest entry; returns how many chunks went."""
        rec = self.manifest.get(source)
        n = self._chunks.count_source(source)
        with self._change() as index:
            if rec is not None:
                self.manifest.set_status(source, "pending")
            self._chunks.delete_source(source)
            revision = self._update_lexical(index, source, [], [])
            self.manifest.remove(source)
            self._bump(revision)
        return n

    def reset(self) -> None:
        """Drop every chunk and manifest entry."""
        with self._change():
            self._chunks.drop()
            for rec in self.manifest.all():
                self.manifest.remove(rec.source)
            self.manifest.clear_failure()
            revision = uuid.uuid4().hex
            with self._lexical_lock:
                self._index().build([], [], revision)
            self._bump(revision)

    @contextlib.contextmanager
    def _change(self) -> Iterator[LexicalIndex | None]:
        """Around one change of content: yields the BM25 index to update with it when the index matched the store
        before (else None: the next `lexical()` rebuilds it). The revision moves first, so a crash before the
        change is committed leaves the index stale, hence rebuilt from Chroma by the next run, as ever."""
        with self._lexical_lock:
            index, revision = self._index(), self.revision()
            if index.revision != revision and not index.load() and self._chunks.count() == 0:
                index.build([], [], revision)  # a new store: incremental from its first file
            current = index.revision == revision
        self._changes += 1
        try:
            self._bump()
            yield index if current else None
        finally:
            self._changes -= 1

    def _update_lexical(self, index: LexicalIndex | None, source: str, ids: list[str], texts: list[str]) -> str:
        """The file's postings replaced in the index, saved under the revision the store takes once the manifest
        says the file is done (until then the index is ahead of the store: stale, if the process dies here)."""
        revision = uuid.uuid4().hex
        if index is not None:
            with self._lexical_lock:
                index.update([_file_key(source)], ids, texts, revision, [_file_key(source)] * len(ids))
        return revision

    def _bump(self, revision: str | None = None) -> None:
        # Any change of content gets a new revision; the lexical index compares it to the one it matches.
        revision = revision or uuid.uuid4().hex
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
    def lexical(self) -> LexicalIndex:
        """The BM25 index of every chunk: kept current by each change made through this store; opened again from
        disk when another store object or process changed it; rebuilt from Chroma only when it does not match
        the store (none yet, an older format or tokeniser, a crash mid-change, another machine's change)."""
        with self._lexical_lock:
            index, revision = self._index(), self.revision()
            if index.revision != revision and not self._changes and not (index.load() and index.revision == revision):
                ids, texts = self._chunks.texts()
                index.build(ids, texts, revision, [cid.rsplit("-", 1)[0] for cid in ids])
                self.lexical_rebuilds += 1
            return index

    def _index(self) -> LexicalIndex:
        from rag.storage.lexical import LexicalIndex  # numpy: not for a run that never searches or writes

        if self._lexical is None:
            self._lexical = LexicalIndex(self.root / "bm25")
            self._lexical.load()
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

    def languages(self) -> dict[str, int]:
        """The languages the store's files are written in, as language -> files judged (`rag.lang.language_of`
        of each file's middle chunk; at most LANGUAGE_SAMPLE files, spread evenly, so that a large store answers
        in one read). Kept until the store's revision changes."""
        revision = self.revision()
        if self._languages is None or self._languages[0] != revision:
            records = [r for r in self.files() if r.chunk_ids]
            step = max(1, len(records) // LANGUAGE_SAMPLE)
            counts: dict[str, int] = {}
            for lang in self._languages_of(records[::step]).values():
                counts[lang] = counts.get(lang, 0) + 1
            self._languages = (revision, counts)
        return dict(self._languages[1])

    def file_languages(self, sources: list[str]) -> dict[str, str]:
        """The language of each of these stored files (judged on its middle chunk), by source; files the store
        does not hold are left out."""
        records = [self.manifest.get(source) for source in sources]
        return self._languages_of([r for r in records if r is not None and r.chunk_ids])

    def _languages_of(self, records: list[FileRecord]) -> dict[str, str]:
        ids = {r.chunk_ids[len(r.chunk_ids) // 2]: r.source for r in records}
        chunks = self._chunks.get(list(ids), with_vectors=False) if ids else {}
        return {ids[i]: language_of(text) for i, (text, _meta, _vec) in chunks.items()}

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


def _file_key(source: str) -> str:
    """What a file's chunk ids start with (see `chunk_id`): its group in the BM25 index."""
    return chunk_id(source, 0).rsplit("-", 1)[0]


def recorded_model(settings: Settings) -> str | None:
    """The model a store that holds files records (manifest of an embedded store, collection of a Chroma server);
    None for a store that does not exist yet or is empty (its first ingest chooses)."""
    if settings.chroma_host:
        chunks = Collection(settings, "all-MiniLM-L6-v2")  # made under the default name if missing
        return chunks.embedding_model() if chunks.count() else None
    path = Path(settings.store) / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = Manifest(path)
    try:
        return manifest.get_meta(EMBEDDING_MODEL_KEY) if manifest.has_files() else None
    finally:
        manifest.close()
