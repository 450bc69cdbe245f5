"""OpenAI-compatible chat: /v1/models names the one model; /v1/chat/completions answers the last user message
(earlier turns are the history) through the model queue, whole or as server-sent events, with the sources."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rag.config import Settings
from rag.server.errors import ServeError, error_response, one_line
from rag.server.model_queue import ModelQueue

router = APIRouter()


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    # Sampling options (temperature, max_tokens, ...) are accepted and ignored: the server's settings decide.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


def model_name(settings: Settings) -> str:
    """The model's name as /v1/models shows it: the packaged name, or a GGUF's file name (never its folder)."""
    return Path(settings.model).name if ("/" in settings.model or settings.model.endswith(".gguf")) else settings.model


def question_and_history(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last message (a user's) is the question; earlier user/assistant turns are the history."""
    last = messages[-1]
    if last.role != "user":
        raise ServeError(400, f"the last message must be the user's question, not a {last.role!r} message")
    question = last.text().strip()
    if not question:
        raise ServeError(400, "the question (the last user message) is empty")
    history = [("human" if m.role == "user" else "ai", m.text()) for m in messages[:-1] if m.role in ("user", "assistant")]
    return question, history


def source_dicts(answer: Any) -> list[dict[str, Any]]:
    """The passages the answer cites (for a refusal: the nearest ones, so the user sees what was searched)."""
    shown = answer.context[:3] if answer.refused else answer.sources
    return [{"n": s.number, "source": s.source, "page": s.page, "text": s.text, "score": s.score} for s in shown]


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    name = model_name(request.app.state.settings)
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rag"}]}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    question, history = question_and_history(body.messages)
    queue: ModelQueue = request.app.state.queue
    name = model_name(request.app.state.settings)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        return StreamingResponse(_sse(queue, question, history, cid, created, name), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    collect = asyncio.ensure_future(_collect(queue, question, history))
    gone = asyncio.ensure_future(_disconnected(request))
    await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not collect.done():
        collect.cancel()  # the client went away: its generation stops (or it leaves the queue)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await collect
        return error_response(499, "client closed the request")
    gone.cancel()
    text, answer, finish = collect.result()
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "sources": source_dicts(answer), "refused": answer.refused,
    }


def _finish_reason(queue: ModelQueue, tokens: int) -> str:
    return "length" if tokens >= queue.rag.settings.max_tokens else "stop"


async def _collect(queue: ModelQueue, question: str, history: list[tuple[str, str]]) -> tuple[str, Any, str]:
    """The whole answer: (text, `Answer`, finish reason)."""
    tokens, answer = 0, None
    gen = queue.generate(question, history)
    try:
        async for item in gen:
            if isinstance(item, str):
                tokens += 1
            else:
                answer = item
    finally:
        await gen.aclose()
    return answer.text, answer, _finish_reason(queue, tokens)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(queue: ModelQueue, question: str, history: list[tuple[str, str]], cid: str, created: int,
               name: str) -> AsyncIterator[str]:
    """The answer as OpenAI's chat.completion.chunk events; the last one carries the sources."""

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    gen = queue.generate(question, history)
    tokens = 0
    try:
        async for item in gen:
            if isinstance(item, str):
                tokens += 1
                yield event({"content": item})
            else:
                yield event({}, _finish_reason(queue, tokens), sources=source_dicts(item), refused=item.refused)
    except Exception as exc:  # headers are sent: report in the stream, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': one_line(exc), 'type': 'server_error'}})}\n\n"
    finally:
        await gen.aclose()
    yield "data: [DONE]\n\n"
