"""Ingest: discover files, skip the unchanged ones, then load -> split -> embed -> commit file by file, and
report what happened to each.

The stages overlap: a reader (a child process when there are several files to read, a thread for a single
one; `readers.py`) hashes, loads and splits the next files (`prepare.py`), at most `prefetch` ahead, while this
process embeds; the chunks of small files are embedded together, in batches of up to 4 x the embedding batch
size (`pipeline.py`). Each file is still committed whole, on its own and in discovery order
(`Store.replace_file`, under the manifest's 'pending' mark), right after its last vector; memory holds at most
the files being prefetched and about READ_AHEAD_CHUNKS chunks waiting for vectors (plus the last file read).

What a second run does with each kind of file: unchanged files (same size and mtime, or same sha256) are
skipped without parsing; a file that was read but had no text (empty, blank, scanned without OCR) is recorded
in the manifest with 0 chunks, so it counts as unchanged until it changes (or until OCR becomes available);
a file that could not be read (failed) is remembered with the reason and reported again, without being read,
until it or the settings that judged it change.
"""

from rag.ingest.discover import discover
from rag.ingest.pipeline import READ_AHEAD_CHUNKS, IngestReport, Ingestor, Progress

__all__ = ["READ_AHEAD_CHUNKS", "IngestReport", "Ingestor", "Progress", "discover"]
