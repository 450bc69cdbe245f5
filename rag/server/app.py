"""`rag serve`'s application assembled from its feature routers (chat, ingest, sources, the page, health),
with the API key, the error bodies and the shared state; and how to run it on a socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rag.api import RAG
from rag.config import Settings
from rag.server.chat.router import router as chat_router
from rag.server.errors import ServeError, error_response, one_line
from rag.server.health.router import router as health_router
from rag.server.ingest.router import router as ingest_router
from rag.server.model_queue import ModelQueue
from rag.server.page.router import router as page_router
from rag.server.sources.router import router as sources_router


def create_app(rag: RAG, settings: Settings | None = None, docs: Sequence[Path | str] = ()) -> FastAPI:
    """The FastAPI app over `rag`. `docs`: folders whose files /api/ingest may read by path, besides the upload
    folder. Endpoints need `settings.api_key` (as a Bearer token) when it is set, except /health and the page.

    The routers find what they share on `app.state`: rag, settings, queue (the one model), upload_dir,
    allowed (folders /api/ingest may read), ingest_lock, and loop once the server runs."""
    settings = settings or rag.settings
    upload_dir = Path(settings.upload_dir or Path(settings.store) / "uploads").resolve()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for code outside the server that must reach the queue
        yield

    app = FastAPI(title="rag", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.rag, app.state.settings, app.state.queue = rag, settings, ModelQueue(rag)
    app.state.upload_dir, app.state.allowed = upload_dir, [upload_dir, *(Path(d).resolve() for d in docs)]
    app.state.ingest_lock = asyncio.Lock()
    _add_error_handlers(app)
    auth = [Depends(_authorize)]
    app.include_router(health_router)
    app.include_router(page_router)
    app.include_router(chat_router, dependencies=auth)
    app.include_router(sources_router, dependencies=auth)
    app.include_router(ingest_router, dependencies=auth)
    return app


def _authorize(request: Request) -> None:
    api_key = request.app.state.settings.api_key
    if not api_key:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
        raise ServeError(401, "missing or wrong API key (send Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's, answers with the one-line OpenAI error body."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, one_line(exc))


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


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix-domain socket at `path`, readable and writable by its owner only (0600, set before it
    listens: uvicorn's own `uds=` would make it 0666). A leftover socket file at `path` is replaced."""
    path = Path(path)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the file is created 0600, with no moment at a wider mode
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
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
