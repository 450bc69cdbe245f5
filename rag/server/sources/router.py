"""GET /api/sources: the ingested files with their pages, chunks, status and ingest time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/api/sources")
async def sources(request: Request) -> dict[str, Any]:
    files = await asyncio.to_thread(request.app.state.rag.files)
    return {"object": "list", "data": [
        {"source": f.source, "name": Path(f.source).name, "pages": f.pages, "chunks": f.chunks,
         "status": f.status, "ingested_at": f.ingested_at} for f in files]}
