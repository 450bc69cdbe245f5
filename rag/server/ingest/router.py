"""POST /api/ingest: multipart uploads (written to the upload folder) or JSON {"paths": [...]} inside the
allowed folders, ingested one request at a time while the model keeps answering."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.server.errors import ServeError, one_line
from rag.server.uploads import receive_uploads

router = APIRouter()
PATHS_SHAPE = 'expected {"paths": ["file or folder", ...]}'


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1)


@router.post("/api/ingest")
async def ingest(request: Request) -> dict[str, Any]:
    from rag.loaders import SUPPORTED_SUFFIXES

    state = request.app.state
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        limit = state.settings.max_upload_mb * 1024 * 1024
        paths = await receive_uploads(request, state.upload_dir, limit, SUPPORTED_SUFFIXES)
    elif ctype.startswith("application/json"):
        body = _paths_request(await request.body())
        paths = allowed_files(body.paths, state.allowed, SUPPORTED_SUFFIXES)
    else:
        raise ServeError(415, 'send files as multipart/form-data, or JSON {"paths": [...]}')
    async with state.ingest_lock:  # ingests from this server queue; the model keeps answering meanwhile
        report = await asyncio.to_thread(_ingest, state.rag, paths)
    return {"ingested": report.ingested, "unchanged": report.unchanged, "skipped": report.skipped,
            "failed": report.failed, "warnings": report.warnings, "pages": report.pages, "chunks": report.chunks,
            "seconds": round(report.seconds, 3)}


def _paths_request(raw: bytes) -> IngestRequest:
    try:
        return IngestRequest.model_validate(json.loads(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServeError(400, f'{PATHS_SHAPE}: {where}: {first["msg"]}') from None
    except ValueError as exc:
        raise ServeError(400, f"{PATHS_SHAPE}: {one_line(exc)[:200]}") from None


def _ingest(rag: Any, paths: list[Path]) -> Any:
    from rag.storage.store import StoreError

    try:
        return rag.ingest(*paths)
    except StoreError as exc:  # another process (a `rag ingest`) holds the store's write lock
        raise ServeError(409, str(exc)) from None


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def allowed_files(raw_paths: list[str], roots: Sequence[Path], suffixes: frozenset[str]) -> list[Path]:
    """Files to ingest from paths on the server: each (after following symlinks) inside an allowed folder (403
    otherwise), existing (404), with a supported type; files reached inside folders obey the same rule."""
    from rag.ingest import discover

    out: list[Path] = []
    for raw in raw_paths:
        if "\x00" in raw:
            raise ServeError(400, "path contains a NUL character")
        real = Path(os.path.realpath(raw))
        if not _inside(real, roots):
            raise ServeError(403, f"{raw}: outside the folders this server may ingest from (the upload folder and --docs)")
        if not real.exists():
            raise ServeError(404, f"{raw}: no such file or folder")
        if real.is_file() and real.suffix.lower() not in suffixes:
            raise ServeError(415, f"{raw}: unsupported file type {real.suffix or '(none)'}")
        files, _ = discover([real])
        # A symlink inside an allowed folder may point anywhere: keep only files whose target is inside too.
        out += [f for f in files if _inside(Path(os.path.realpath(f)), roots)]
    return list(dict.fromkeys(out))
