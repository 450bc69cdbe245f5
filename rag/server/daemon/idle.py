"""Idle tracking for the background server: requests in flight and when the last one ended (status polls do not
count), and the watch that stops the server after `keep_alive` idle seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

# Looking at the server (rag ps, the client's health check) does not keep it alive.
QUIET_PATHS = {"/health", "/daemon/status"}


class Idle:
    """Pure ASGI middleware: counts the requests being answered (a streamed answer until its last byte)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = 0
        self.last = time.monotonic()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.last = time.monotonic()

    def idle_seconds(self) -> float:
        return 0.0 if self.active else time.monotonic() - self.last


async def exit_when_idle(idle: Idle, keep_alive: float, stop: Callable[[], None]) -> None:
    """Call `stop` once nothing was asked for `keep_alive` seconds."""
    while True:
        left = keep_alive - idle.idle_seconds() if not idle.active else keep_alive
        if not idle.active and left <= 0:
            stop()
            return
        await asyncio.sleep(left)
