"""GET /health (no API key needed): "ok", whether the model is answering and how many requests wait."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    queue = request.app.state.queue
    return {"status": "ok", "busy": queue.busy, "queued": queue.waiting}
