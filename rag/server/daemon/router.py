"""GET /daemon/status (what `rag ps` shows) and POST /daemon/ask: one question through the model queue, streamed
as JSON lines (text pieces, then the whole answer with its passages), so that the CLI prints what it prints in
process."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from rag.server.errors import one_line

router = APIRouter()
# Errors the user can act on (a bad store, model or setting): shown as they are, not as a server failure.
USER_ERRORS = ("ConfigError", "ModelError", "StoreError", "EmbeddingError", "LoadError", "DaemonError")


class AskRequest(BaseModel):
    question: str = Field(min_length=1)
    history: list[tuple[str, str]] = []  # ("human" | "ai", text), oldest first
    source_glob: str | None = None


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (VmRSS), or its peak so far (VmHWM), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@router.get("/daemon/status")
async def status(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {**state.daemon, "pid": os.getpid(), "rss_bytes": rss_bytes(), "peak_rss_bytes": rss_bytes("VmHWM"),
            "idle_seconds": state.idle.idle_seconds(),
            "busy": state.queue.busy, "queued": state.queue.waiting, "answered": state.answered,
            "store_reopened": state.reopened,
            # The last requests' ends ("stop", "length", "disconnected", "error") and token counts, oldest first.
            "finishes": [{"finish": r["finish"], "tokens": r["tokens"]} for r in list(state.queue.log)[-8:]]}


def answer_dict(answer: Any) -> dict[str, Any]:
    """Everything the CLI prints of an `Answer`: its JSON form (`public`, what `rag ask --json` prints, whole) plus
    every passage the model saw, those left out and the prompt's length."""
    return {"public": answer.to_dict(), "question": answer.question, "standalone_question": answer.standalone_question,
            "context": [s.to_dict() for s in answer.context], "dropped": answer.dropped,
            "prompt_tokens": answer.prompt_tokens}


@router.post("/daemon/ask")
async def ask(body: AskRequest, request: Request) -> StreamingResponse:
    return StreamingResponse(_lines(request, body), media_type="application/x-ndjson")


async def _lines(request: Request, body: AskRequest) -> AsyncIterator[str]:
    state = request.app.state
    # A client that goes away (Ctrl-C, killed) cancels this generator: the queue stops the generation.
    gen = state.queue.generate(body.question, [tuple(h) for h in body.history], body.source_glob)
    try:
        async for item in gen:
            if isinstance(item, str):
                yield json.dumps({"text": item}, ensure_ascii=False) + "\n"
            else:
                state.answered += 1
                yield json.dumps({"answer": answer_dict(item)}, ensure_ascii=False) + "\n"
    except Exception as exc:  # the response has begun: the error goes in the stream, as one line
        user = type(exc).__name__ in USER_ERRORS
        yield json.dumps({"error": str(exc) if user else one_line(exc)}, ensure_ascii=False) + "\n"
    finally:
        await gen.aclose()
