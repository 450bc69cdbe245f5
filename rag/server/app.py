"""`rag serve`'s application: an OpenAI-compatible chat API, ingest and sources endpoints and a one-page chat,
all over one `RAG` whose single in-process model answers one request at a time (the others queue)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from rag.api import RAG
from rag.config import Settings

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    499: "client_closed_request",
    500: "server_error",
}
# Multipart headers and boundaries on top of the files themselves.
UPLOAD_OVERHEAD = 64 * 1024
# The page may talk to this server only: no outside scripts, styles, fonts or connections.
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ServeError(HTTPException):
    """An HTTP error with a one-line message; rendered as OpenAI's {"error": {"message", "type"}}."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


# --- OpenAI request shapes -------------------------------------------------------------------------------------
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


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1)


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


# --- the model queue -------------------------------------------------------------------------------------------
_END = object()


class ModelQueue:
    """One generation at a time, first come first served. The model is released only when its worker thread
    has stopped, so the next request never shares llama.cpp with a leftover one; a consumer that goes away
    (client disconnected) makes the worker stop at the next token."""

    def __init__(self, rag: RAG, log_size: int = 256) -> None:
        self.rag = rag
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.busy = False
        self.ids = itertools.count(1)
        # One record per request: {"id", "tokens", "finish"}; finish is "stop", "length", "disconnected" or "error".
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)

    async def generate(self, question: str, history: list[tuple[str, str]]) -> AsyncIterator[Any]:
        """Yield the answer's text pieces, then the finished `Answer`."""
        record: dict[str, Any] = {"id": next(self.ids), "tokens": 0, "finish": "disconnected", "started": False}
        self.log.append(record)
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        self.busy = record["started"] = True

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def work() -> None:
            stream = self.rag.stream(question, history)
            try:
                for item in stream:
                    if stop.is_set():
                        break  # the client is gone: stop generating now
                    if isinstance(item, str):
                        record["tokens"] += 1
                    else:
                        record["finish"] = "length" if record["tokens"] >= self.rag.settings.max_tokens else "stop"
                    put(item)
            except BaseException as exc:  # handed to the request, which answers with a one-line error
                record["finish"] = "error"
                put(exc)
            finally:
                stream.close()  # closes the chain and llama.cpp's generator, which frees the model
                put(_END)

        def release(_: Any) -> None:
            self.busy = False
            self.lock.release()

        try:
            worker = loop.run_in_executor(None, work)
        except BaseException:
            self.busy = False
            self.lock.release()
            raise
        worker.add_done_callback(release)
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Normal end, an error, or the request task cancelled because the client disconnected.
            stop.set()


# --- helpers for paths and uploads -----------------------------------------------------------------------------
def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def safe_upload_name(raw: str) -> str:
    """A plain file name, or ServeError 400: no folders, no '..', no NULs, not hidden."""
    name = raw.strip()
    # A leading dot covers ".", ".." and hidden files; with no separators the name cannot leave the folder.
    if not name or name.startswith(".") or any(c in name for c in "/\\") or any(ord(c) < 32 for c in name):
        raise ServeError(400, f"upload file name {raw!r} is not a plain file name (no folders, '..' or NULs)")
    if len(name.encode("utf-8")) > 255:
        raise ServeError(400, "upload file name is longer than 255 bytes")
    return name


class _UploadSink:
    """Receives multipart parts and writes each file straight into a temporary file inside `folder`."""

    def __init__(self, folder: Path, limit: int, suffixes: frozenset[str]) -> None:
        self.folder, self.limit, self.suffixes = folder, limit, suffixes
        self.total = 0
        self.files: list[tuple[str, Path]] = []  # (final name, temporary path)
        self.error: ServeError | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._fh: Any = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
                "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:
            return  # a plain form field: ignored
        raw = options[b"filename"]
        try:
            name = safe_upload_name(raw.decode("utf-8"))
        except UnicodeDecodeError:
            name = safe_upload_name(raw.decode("latin-1"))
        suffix = Path(name).suffix.lower()
        if suffix not in self.suffixes:
            raise ServeError(415, f"{name}: unsupported file type {suffix or '(none)'} (supported: {', '.join(sorted(self.suffixes))})")
        self._fh = tempfile.NamedTemporaryFile(dir=self.folder, prefix=".upload-", suffix=".part", delete=False)
        self.files.append((name, Path(self._fh.name)))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._fh is None:
            return
        self.total += end - start
        if self.total > self.limit:
            raise ServeError(413, f"upload larger than the limit of {self.limit // (1024 * 1024)} MB (max_upload_mb)")
        self._fh.write(data[start:end])

    def on_part_end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for _, tmp in self.files:
            tmp.unlink(missing_ok=True)


# --- the application -------------------------------------------------------------------------------------------
def model_name(settings: Settings) -> str:
    """The model's name as /v1/models shows it: the packaged name, or a GGUF's file name (never its folder)."""
    return Path(settings.model).name if ("/" in settings.model or settings.model.endswith(".gguf")) else settings.model


def create_app(rag: RAG, settings: Settings | None = None, docs: Sequence[Path | str] = ()) -> FastAPI:
    """The FastAPI app over `rag`. `docs`: folders whose files /api/ingest may read by path, besides the upload
    folder. Endpoints need `settings.api_key` (as a Bearer token) when it is set, except /health and the page."""
    from rag.loaders import SUPPORTED_SUFFIXES

    settings = settings or rag.settings
    upload_dir = Path(settings.upload_dir or Path(settings.store) / "uploads").resolve()
    allowed = [upload_dir, *(Path(d).resolve() for d in docs)]
    queue = ModelQueue(rag)
    ingest_lock = asyncio.Lock()
    name = model_name(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for code outside the server that must reach the queue
        yield

    app = FastAPI(title="rag", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.rag, app.state.queue, app.state.upload_dir, app.state.allowed = rag, queue, upload_dir, allowed

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, _one_line(exc))

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ServeError(401, "missing or wrong API key (send Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorize)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "busy": queue.busy, "queued": queue.waiting}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        # The page holds no data (it asks for the key when the API answers 401), so it is served without one.
        html = resources.files("rag.server").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rag"}]}

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        question, history = question_and_history(body.messages)
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
            return _error(499, "client closed the request")
        gone.cancel()
        text, answer, finish = collect.result()
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "sources": source_dicts(answer), "refused": answer.refused,
        }

    @app.get("/api/sources", dependencies=auth)
    async def sources() -> dict[str, Any]:
        files = await asyncio.to_thread(rag.files)
        return {"object": "list", "data": [
            {"source": f.source, "name": Path(f.source).name, "pages": f.pages, "chunks": f.chunks,
             "status": f.status, "ingested_at": f.ingested_at} for f in files]}

    @app.post("/api/ingest", dependencies=auth)
    async def ingest(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            paths = await _receive_uploads(request, upload_dir, settings.max_upload_mb * 1024 * 1024, SUPPORTED_SUFFIXES)
        elif ctype.startswith("application/json"):
            try:
                body = IngestRequest.model_validate(json.loads(await request.body()))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ServeError(400, f'expected {{"paths": ["file or folder", ...]}}: {where}: {first["msg"]}') from None
            except ValueError as exc:
                raise ServeError(400, f'expected {{"paths": ["file or folder", ...]}}: {_one_line(exc)[:200]}') from None
            paths = _allowed_files(body.paths, allowed, SUPPORTED_SUFFIXES)
        else:
            raise ServeError(415, 'send files as multipart/form-data, or JSON {"paths": [...]}')
        async with ingest_lock:  # ingests from this server queue; the model keeps answering meanwhile
            report = await asyncio.to_thread(_ingest, rag, paths)
        return {"ingested": report.ingested, "unchanged": report.unchanged, "skipped": report.skipped,
                "failed": report.failed, "warnings": report.warnings, "pages": report.pages, "chunks": report.chunks,
                "seconds": round(report.seconds, 3)}

    return app


def _ingest(rag: RAG, paths: list[Path]) -> Any:
    from rag.storage.store import StoreError

    try:
        return rag.ingest(*paths)
    except StoreError as exc:  # another process (a `rag ingest`) holds the store's write lock
        raise ServeError(409, str(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


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
    return answer.text, answer, "length" if tokens >= queue.rag.settings.max_tokens else "stop"


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(queue: ModelQueue, question: str, history: list[tuple[str, str]], cid: str, created: int,
               name: str) -> AsyncIterator[str]:
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
                finish = "length" if tokens >= queue.rag.settings.max_tokens else "stop"
                yield event({}, finish, sources=source_dicts(item), refused=item.refused)
    except Exception as exc:  # headers are sent: report in the stream, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': _one_line(exc), 'type': 'server_error'}})}\n\n"
    finally:
        await gen.aclose()
    yield "data: [DONE]\n\n"


async def _receive_uploads(request: Request, folder: Path, limit: int, suffixes: frozenset[str]) -> list[Path]:
    """Stream multipart files into `folder` (never elsewhere), at most `limit` bytes in all; returns their paths."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + UPLOAD_OVERHEAD:
        raise ServeError(413, f"upload larger than the limit of {limit // (1024 * 1024)} MB (max_upload_mb)")
    _, params = parse_options_header(request.headers.get("content-type"))
    if b"boundary" not in params:
        raise ServeError(400, "multipart body without a boundary")
    folder.mkdir(parents=True, exist_ok=True)
    sink = _UploadSink(folder, limit, suffixes)
    try:
        parser = MultipartParser(params[b"boundary"], sink.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if not sink.files:
            raise ServeError(400, "no file in the upload (send them as multipart/form-data file fields)")
        paths = []
        for name, tmp in sink.files:
            final = folder / name
            if final.resolve().parent != folder:  # belt and braces: the name was checked already
                raise ServeError(400, f"upload file name {name!r} leaves the upload folder")
            os.replace(tmp, final)
            paths.append(final)
        sink.files.clear()
        return paths
    except FormParserError as exc:
        raise ServeError(400, f"malformed multipart body ({_one_line(exc)[:120]})") from None
    finally:
        sink.discard()


def _allowed_files(raw_paths: list[str], roots: Sequence[Path], suffixes: frozenset[str]) -> list[Path]:
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


# --- running ---------------------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), so the caller knows the port before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread; yields its base URL (for tests and benchmarks)."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        h, p = sock.getsockname()[:2]
        yield f"http://{h if ':' not in h else f'[{h}]'}:{p}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
