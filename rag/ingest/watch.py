"""`rag watch`: keep the store in sync with folders. watchfiles reports the changes; each changed path waits until
its size and mtime held still across one debounce; then the batch goes through the ingest in one go: a rename or
move is relabelled (same content hash: nothing re-embedded), a deletion pruned, the rest ingested as by `rag ingest`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rag.ingest.discover import discover
from rag.ingest.pipeline import IngestReport, Ingestor, Progress
from rag.ingest.prepare import file_sha256
from rag.storage.store import FileRecord

# Editors' and downloaders' temporary and lock files, never ingested: vim's swap files and the `4913` file it
# writes to test a folder, `name~` backups, partial downloads; Emacs' `.#name` and LibreOffice's `.~lock.name#`
# are hidden files (skipped like every hidden file or folder), MS Office's lock files start with `~$`.
TEMP_SUFFIXES = (".swp", ".swx", ".swo", "~", ".tmp", ".part", ".partial", ".crdownload")
TEMP_NAMES = frozenset({"4913"})
# A path that keeps changing holds the batch back at most this long; then what has settled goes in without it.
MAX_HOLD = 30.0


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is hidden, or an editor's or downloader's temporary or lock file."""
    return name.startswith((".", "~$")) or name in TEMP_NAMES or name.lower().endswith(TEMP_SUFFIXES)


class PathFilter:
    """The paths `rag watch` looks at: under a watched folder, no hidden or temporary part, not the store itself
    (a store inside a watched folder would otherwise see its own writes)."""

    def __init__(self, roots: list[Path], store: Path) -> None:
        self.roots = roots
        self.store = store

    def __call__(self, change: object, path: str) -> bool:  # watchfiles' watch_filter
        return self.wanted(Path(path))

    def keeps(self, path: Path) -> bool:
        """For a file found in a changed folder (resolved, so perhaps a symlink's target outside the roots)."""
        return not is_temporary(path.name) and not path.is_relative_to(self.store)

    def wanted(self, path: Path) -> bool:
        if path.is_relative_to(self.store):
            return False
        for root in self.roots:
            if path.is_relative_to(root):
                return not any(is_temporary(part) for part in path.relative_to(root).parts)
        return False


def _signature(path: str) -> tuple[bool, int, int] | None:
    """What says a path changed: folder or not, size and mtime; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.isdir(path), st.st_size, st.st_mtime_ns)


class Settling:
    """Changed paths waiting to hold still: a path settles once its signature was the same at two looks at least
    `debounce` seconds apart (a file still being written or copied keeps changing its size or mtime)."""

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self._pending: dict[str, tuple[tuple | None, float]] = {}  # path -> (signature, seen so since)
        self._first = 0.0  # when the oldest pending path came

    def add(self, paths: Iterable[str], now: float) -> None:
        for path in paths:
            if not self._pending:
                self._first = now
            self._pending[path] = (_signature(path), now)

    def take(self, now: float) -> list[str]:
        """The batch to sync now: every pending path once all have settled (a burst is one batch), or the settled
        ones when something kept changing for MAX_HOLD seconds. Empty while waiting."""
        settled = []
        for path, (sig, since) in list(self._pending.items()):
            current = _signature(path)
            if current != sig:
                self._pending[path] = (current, now)
            elif now - since >= self.debounce:
                settled.append(path)
        if not settled or (len(settled) < len(self._pending) and now - self._first < MAX_HOLD):
            return []
        for path in settled:
            del self._pending[path]
        self._first = now
        return sorted(settled)


@dataclass
class WatchReport:
    """What one batch did: the ingest's report, plus the files relabelled (old, new) and deleted."""

    files: int = 0  # files looked at (folders expanded)
    ingest: IngestReport = field(default_factory=IngestReport)
    relabelled: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Watcher:
    """Keeps one store in sync with folders, through one `Ingestor` (so the embedder loads once)."""

    def __init__(self, ingestor: Ingestor, roots: Iterable[Path | str], store: Path | str, debounce: float = 1.0) -> None:
        self.ingestor = ingestor
        self.store = ingestor.store
        self.roots = [Path(root).resolve() for root in roots]
        self.filter = PathFilter(self.roots, Path(store).resolve())
        self.debounce = debounce

    def sync(self, paths: Iterable[Path | str], progress: Progress | None = None) -> WatchReport:
        """Bring the store in line with `paths` (files or folders) as they are on disk now: a new name for stored
        content is relabelled, what vanished at or under a path is deleted, the rest goes through the ingest."""
        started = time.perf_counter()
        paths = [str(path) for path in paths]
        found, _ = discover([path for path in paths if os.path.exists(path)])  # one gone meanwhile: deleted below
        files = [path for path in found if self.filter.keeps(path)]
        report = WatchReport(files=len(files))
        with self.store.writer(wait=True):
            files = self._relabel(files, report)  # before pruning: the old names are what it matches
            self._prune(paths, report)
        # Always run: it also completes files an interrupted run left half-replaced ('pending').
        report.ingest = self.ingestor.run(files, progress=progress, wait=True)
        report.seconds = time.perf_counter() - started
        return report

    def _relabel(self, files: list[Path], report: WatchReport) -> list[Path]:
        """Relabel the new files whose content (size, then sha256) is a stored file's that is gone from disk;
        returns the files left to ingest."""
        known = {rec.source: rec for rec in self.store.files()}
        orphans: dict[int, list[FileRecord]] = {}
        for rec in known.values():
            if rec.chunks and rec.fingerprint == self.ingestor.fingerprint and not os.path.exists(rec.source):
                orphans.setdefault(rec.size, []).append(rec)
        rest = []
        for path in files:
            source = str(path)
            try:
                st = path.stat()
                candidates = [] if source in known else orphans.get(st.st_size, [])
                digest = file_sha256(path) if candidates else ""
            except OSError:
                candidates = []  # gone again: the ingest reports it
            match = next((rec for rec in candidates if rec.sha256 == digest), None)
            if match and self.store.relabel_file(match.source, source, st.st_size, st.st_mtime_ns) is not None:
                candidates.remove(match)
                report.relabelled.append((match.source, source))
            else:
                rest.append(path)
        return rest

    def _prune(self, paths: list[str], report: WatchReport) -> None:
        """Delete the stored files at or under `paths` that are gone from disk, and forget their failures."""
        exact, under = set(paths), tuple(path.rstrip(os.sep) + os.sep for path in paths)
        for rec in self.store.files():
            if (rec.source in exact or rec.source.startswith(under)) and not os.path.exists(rec.source):
                self.store.delete_file(rec.source)
                report.deleted.append(rec.source)
        for source in self.store.failures():
            if (source in exact or source.startswith(under)) and not os.path.exists(source):
                self.store.forget_failure(source)

    def run(self, on_batch: Callable[[WatchReport, bool], None], stop: threading.Event | None = None,
            on_start: Callable[[list[str]], Progress | None] = lambda paths: None) -> None:
        """Sync the folders whole, then each settled batch of changes, until `stop` is set (Ctrl-C raises
        KeyboardInterrupt). `on_start(paths)` before each batch returns its progress callback; `on_batch(report,
        first)` after it, `first` for the whole-folder sync, which starts once the watcher is up (so nothing
        changed meanwhile is missed)."""
        from watchfiles import watch

        ms = max(1, round(self.debounce * 1000))
        settling = Settling(self.debounce)
        first = True
        # rust_timeout: a wake-up at least every debounce, to see whether the pending paths have settled.
        for changes in watch(*self.roots, watch_filter=self.filter, debounce=ms, rust_timeout=ms,
                             yield_on_timeout=True, stop_event=stop, raise_interrupt=True):
            if first:
                roots = [str(root) for root in self.roots]
                on_batch(self.sync(roots, on_start(roots)), True)
                first = False
            now = time.monotonic()
            settling.add((path for _, path in changes), now)
            batch = settling.take(now)
            if batch:
                on_batch(self.sync(batch, on_start(batch)), False)
