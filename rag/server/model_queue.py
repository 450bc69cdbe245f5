"""The server's single in-process model, shared fairly: one generation at a time, first come first served,
and a generation stops when its client goes away."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.api import RAG

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
        # Called in the worker before each generation, while it holds the model (the background server checks
        # there whether another process changed the store).
        self.before_turn: Callable[[], None] | None = None

    async def generate(self, question: str, history: list[tuple[str, str]],
                       source_glob: str | None = None) -> AsyncIterator[Any]:
        """Yield the answer's text pieces, then the finished `Answer`; `source_glob` limits the search to the
        files it matches, for this request only."""
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
        try:
            worker = loop.run_in_executor(None, self._work, question, history, source_glob, record, stop,
                                          lambda item: loop.call_soon_threadsafe(items.put_nowait, item))
        except BaseException:
            self._release()
            raise
        worker.add_done_callback(lambda _: self._release())
        try:
            while (item := await items.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Normal end, an error, or the request task cancelled because the client disconnected.
            stop.set()

    def _work(self, question: str, history: list[tuple[str, str]], source_glob: str | None, record: dict[str, Any],
              stop: threading.Event, put: Any) -> None:
        """The worker thread: stream the answer into `put`, then `_END`; stops early when `stop` is set."""
        try:
            if self.before_turn is not None:
                self.before_turn()
            # The retriever is shared by every request: each one sets its own filter (None: every file).
            self.rag.retriever.source_glob = source_glob
            stream = self.rag.stream(question, history)
        except BaseException as exc:
            record["finish"] = "error"
            put(exc)
            put(_END)
            return
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

    def _release(self) -> None:
        self.busy = False
        self.lock.release()
