"""`rag watch` figures: latency from saving a file to its being retrievable (the watcher's batch line, then a fresh
retriever finding the file first for its unique word), per debounce; and a burst of new files (one batch) against
`rag ingest` of the same files into a fresh store, in the same run.

    python benchmarks/bench_watch.py [--saves 5] [--burst 1000] [--debounce 1.0 --debounce 0.3]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rag import privacy

privacy.apply()

EXE = Path(sys.executable).with_name("rag")
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("RAG_")}, "RAG_EMBEDDING_BACKEND": "torch"}
WORDS = "amber basalt cobalt dunlin egret fescue gannet heather ibis juniper kestrel lichen".split()


class Watcher:
    """A `rag watch` subprocess and the time each stdout line arrived."""

    def __init__(self, folder: Path, store: Path, debounce: float) -> None:
        self.proc = subprocess.Popen([str(EXE), "watch", str(folder), "--store", str(store), "--debounce", str(debounce)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def until(self, prefix: str) -> tuple[float, str]:
        while True:
            at, line = self.lines.get(timeout=1800)
            if line.startswith(prefix):
                return at, line

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def retrievable(store: Path, word: str, name: str) -> bool:
    """Whether a fresh retriever over the store (as a new `rag ask` would open it) ranks `name` first."""
    from rag.api import RAG
    from rag.config import Settings
    from rag.storage.chroma import forget_open_stores

    forget_open_stores()
    rag = RAG(Settings.load(config_file=None, env={}, overrides={"store": store, "embedding_backend": "torch"}))
    try:
        docs = rag.retriever.invoke(f"Where does the {word} nest?")
        return bool(docs) and Path(docs[0].metadata["source"]).name == name
    finally:
        rag.store.close()


def latency(root: Path, debounce: float, saves: int) -> list[float]:
    """Seconds from each save (a new file) to the watcher's batch line; each file checked retrievable after."""
    folder, store = root / f"docs-{debounce}", root / f"store-{debounce}"
    folder.mkdir()
    (folder / "start.md").write_text("The harbour wall was rebuilt in stone.", encoding="utf-8")
    watcher = Watcher(folder, store, debounce)
    seconds = []
    try:
        watcher.until("synced ")
        for i in range(saves):
            word, name = WORDS[i % len(WORDS)], f"save{i}.md"
            saved = time.perf_counter()
            (folder / name).write_text(f"The {word} nests on the cliff above cove number {i}.", encoding="utf-8")
            at, _ = watcher.until("batch: ")
            seconds.append(at - saved)
            assert retrievable(store, word, name), f"{name} not retrievable after its batch"
    finally:
        watcher.stop()
    return seconds


def burst(root: Path, n: int) -> tuple[float, float, str, float]:
    """(seconds from the first write to the batch line, of which writing, the batch line, `rag ingest` wall
    seconds for the same files into a fresh store)."""
    folder = root / "burst"
    folder.mkdir()
    watcher = Watcher(folder, root / "store-burst", 1.0)
    try:
        watcher.until("synced ")
        started = time.perf_counter()
        for i in range(n):
            (folder / f"note{i:04d}.md").write_text(f"Note {i}: the heron number {i} waits at the weir.", encoding="utf-8")
        written = time.perf_counter() - started
        at, line = watcher.until("batch: ")
    finally:
        watcher.stop()
    t0 = time.perf_counter()
    subprocess.run([str(EXE), "ingest", str(folder), "--store", str(root / "store-ingest"), "-q"], check=True, env=ENV,
                   capture_output=True)
    return at - started, written, line, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5, help="files saved one by one per debounce")
    parser.add_argument("--burst", type=int, default=1000, help="files in the burst (0: none)")
    parser.add_argument("--debounce", type=float, action="append", help="debounce seconds (repeatable; default 1.0 and 0.3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp)
        for debounce in args.debounce or [1.0, 0.3]:
            s = latency(root, debounce, args.saves)
            print(f"save -> retrievable, debounce {debounce} s: median {statistics.median(s):.2f} s "
                  f"(min {min(s):.2f}, max {max(s):.2f}; {len(s)} saves; {statistics.median(s) / debounce:.1f}x the debounce)", flush=True)
        if not args.burst:
            return
        total, written, line, ingest = burst(root, args.burst)
        print(f"burst of {args.burst} files: first write -> batch line {total:.1f} s (writing took {written:.1f} s); "
              f"watch's line: {line}", flush=True)
        print(f"rag ingest of the same {args.burst} files (fresh process, fresh store): {ingest:.1f} s wall; "
              f"watch burst / ingest = {total / ingest:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main()
