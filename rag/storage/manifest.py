"""The manifest: a SQLite table of the ingested files (size, mtime, hash, chunk ids, the settings that made
them), the files that could not be read, and the store's content revision."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.sqlite3"


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

    def has_files(self) -> bool:
        return self._db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None

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
