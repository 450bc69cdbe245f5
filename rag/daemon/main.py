"""The background server process (`python -m rag.daemon.main`, started by `lifecycle.spawn`): reads its settings
as JSON on stdin, loads the model, listens on its private socket, says "ready" on stdout, and exits after
`keep_alive` idle seconds or on SIGTERM (`rag stop`)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from typing import Any

from rag import privacy
from rag.config import ConfigError, Settings
from rag.daemon.paths import DaemonPaths


def _report(message: dict[str, Any]) -> None:
    """One JSON line to the client that started us, then stdout goes nowhere (the client stops reading)."""
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except OSError:
        pass  # the client is gone (Ctrl-C while we loaded): serve anyway, for the next one
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _load(settings: Settings) -> tuple[Any, list[str]]:
    """A RAG with everything loaded now, so that the first question is warm too."""
    from rag.api import RAG

    rag = RAG(settings)
    # The store first, as `rag ask` in process does: a missing or empty store is reported before a model loads.
    if rag.store.count() == 0:
        raise ConfigError(f"{settings.store}: the store is empty; run `rag ingest PATH` first")
    warnings = list(rag.model_warnings)
    _ = rag.llm, rag.embeddings, rag.retriever, rag.chain
    return rag, warnings


def _app(rag: Any, paths: DaemonPaths, warnings: list[str]) -> Any:
    from rag.server.app import create_app
    from rag.server.daemon.idle import Idle
    from rag.server.daemon.refresh import follow_store
    from rag.server.daemon.router import router

    app = create_app(rag, rag.settings)
    app.include_router(router)  # no API key: only this user can open the socket
    app.state.daemon = {"key": paths.key, "socket": str(paths.socket), "store": str(rag.settings.store),
                        "model": rag.settings.model, "keep_alive": rag.settings.keep_alive, "started": time.time(),
                        "model_loads": 1, "warnings": warnings}
    app.state.answered = app.state.reopened = 0
    app.state.queue.before_turn = follow_store(app)
    app.state.idle = Idle(app)
    return app


def _write_status(paths: DaemonPaths, app: Any) -> None:
    tmp = paths.status.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        fh.write(json.dumps({**app.state.daemon, "pid": os.getpid()}))
    tmp.replace(paths.status)  # readers never see half a file


def _cleanup(paths: DaemonPaths) -> None:
    """Remove the socket and status file, unless a newer server of the same key has taken them over."""
    try:
        if json.loads(paths.status.read_text()).get("pid") != os.getpid():
            return
    except (OSError, ValueError):
        return
    paths.socket.unlink(missing_ok=True)
    paths.status.unlink(missing_ok=True)


async def _serve(app: Any, sock: Any, keep_alive: float) -> None:
    import uvicorn

    from rag.server.daemon.idle import exit_when_idle

    idle = app.state.idle
    idle.last = time.monotonic()  # the idle time counts from now, not from the model's loading
    server = uvicorn.Server(uvicorn.Config(idle, log_level="warning", timeout_graceful_shutdown=5))
    watch = asyncio.ensure_future(exit_when_idle(idle, keep_alive, lambda: setattr(server, "should_exit", True)))
    try:
        await server.serve(sockets=[sock])
    finally:
        watch.cancel()


def main() -> int:
    privacy.apply()  # an entry point: the off switches before any library is imported
    spec = json.loads(sys.stdin.read())
    settings = Settings.model_validate(spec["settings"])
    paths = DaemonPaths(settings.cache_dir / "daemons", spec["key"])
    try:
        rag, warnings = _load(settings)
        from rag.server.app import bind_unix

        app = _app(rag, paths, warnings)
        sock = bind_unix(paths.socket)
    except Exception as exc:  # the client shows it as one line; the log keeps the traceback
        from rag.server.daemon.router import USER_ERRORS

        traceback.print_exc()
        _report({"error": str(exc) or type(exc).__name__, "user": type(exc).__name__ in USER_ERRORS})
        return 2
    try:
        _write_status(paths, app)
        _report({"ready": True, "pid": os.getpid(), "warnings": warnings})
        asyncio.run(_serve(app, sock, settings.keep_alive))
    finally:
        _cleanup(paths)
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
