"""Benchmark documents written as files under the store and ingested through the normal ingest path, so an
evaluation measures what `rag ingest` builds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rag.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rag.api import RAG

#: Folder inside the store where corpus documents are written before ingesting them.
DOCS_FOLDER = "eval-docs"
#: Folder inside the store where QA contexts are written by `--ingest-contexts`.
CONTEXTS_FOLDER = "eval-contexts"


def doc_filename(doc_id: str) -> str:
    """A safe, reversible-through-a-map file name for a document id ('.txt')."""
    name = quote(doc_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]  # a leading dot would make ingest skip it as hidden
    if not name or len(name.encode()) > 200:
        name = "id-" + hashlib.sha1(doc_id.encode()).hexdigest()
    return name + ".txt"


def document_text(title: str, text: str) -> str:
    """Title, a blank line, text (just the text when there is no title)."""
    title, text = title.strip(), text.strip()
    return f"{title}\n\n{text}" if title and text else title or text


def write_documents(docs: Mapping[str, tuple[str, str]], folder: Path) -> dict[str, str]:
    """Write each document as `<folder>/<id>.txt` (rewriting only files whose content changed, so a re-run
    ingests nothing) and delete other `.txt` files there. Returns resolved path -> document id for every
    written file; documents with no text at all are not written (they could never be retrieved)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    written: dict[str, str] = {}
    for doc_id, (title, text) in docs.items():
        body = document_text(title, text)
        if not body:
            continue
        path = folder / doc_filename(doc_id)
        data = body.encode("utf-8")
        try:
            same = path.read_bytes() == data
        except OSError:
            same = False
        if not same:
            path.write_bytes(data)
        written[str(path)] = doc_id
    for stale in folder.glob("*.txt"):
        if str(stale) not in written:
            stale.unlink()
    return written


def ingest_documents(rag: RAG, docs: Mapping[str, tuple[str, str]], folder_name: str = DOCS_FOLDER,
                     progress: Callable[[str, object], None] | None = None, exclusive: bool = True) -> tuple[dict[str, str], Any]:
    """Write `docs` under `<store>/<folder_name>/` and ingest that folder into `rag`'s store (incremental; files
    removed from the folder are pruned). With `exclusive`, a store that holds other files is refused, so an
    evaluation never mixes benchmark documents with a user's own. Returns (path -> id, IngestReport)."""
    folder = (Path(rag.settings.store) / folder_name).resolve()
    if exclusive:
        others = [r.source for r in rag.files() if not r.source.startswith(str(folder) + "/")]
        if others:
            raise ConfigError(f"{rag.settings.store}: the store holds {len(others)} other file(s) "
                              f"(e.g. {others[0]}); evaluate in a store of its own")
    id_of = write_documents(docs, folder)
    report = rag.ingest(folder, prune=True, progress=progress)
    return id_of, report
