"""The light side of a background server: ask it over its Unix socket (httpx) and rebuild the answer for the CLI
to print. Imports neither torch, Chroma nor llama.cpp: that is what makes a warm answer fast."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

from rag.daemon.paths import DaemonError, DaemonGone, DaemonPaths

# Seconds a server may take to accept a connection and answer its status; a busy one answers at once (the
# model runs in a worker thread), so a longer silence means it hangs.
HEALTH_TIMEOUT = 10.0


def label(source: str, page: int | None) -> str:
    """'data/R-FAQ.pdf, p. 3', relative to this process's folder when the file is under it (the server's folder is /)."""
    rel = os.path.relpath(source)
    shown = source if rel.startswith("..") else rel
    return f"{shown}, p. {page}" if page else shown


def remote_answer(data: dict[str, Any]) -> SimpleNamespace:
    """The server's answer as the CLI uses an `Answer`: text, sources, context, refused, dropped, prompt_tokens,
    to_dict() (the server's own `Answer.to_dict()`, so `--json` prints the same keys either way)."""
    def sources(items: list[dict[str, Any]]) -> list[SimpleNamespace]:
        return [SimpleNamespace(**s, label=label(s["source"], s["page"])) for s in items]

    public = data["public"]
    return SimpleNamespace(question=data["question"], text=public["answer"], sources=sources(public["sources"]),
                           context=sources(data["context"]), refused=public["refused"],
                           refused_by=public.get("refused_by"), standalone_question=data["standalone_question"],
                           translated_question=public.get("translated_question"),
                           dropped=data["dropped"], prompt_tokens=data["prompt_tokens"], to_dict=lambda: public)


class DaemonClient:
    """Talks to one background server; `stream` has the signature of `RAG.stream`, so a `ChatSession` can use it."""

    def __init__(self, paths: DaemonPaths, warnings: Sequence[str] = ()) -> None:
        import httpx

        self.paths = paths
        self.warnings = list(warnings)
        self.source_glob: str | None = None
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=str(paths.socket)), base_url="http://rag")

    def status(self, timeout: float = HEALTH_TIMEOUT) -> dict[str, Any]:
        """What the server says of itself (GET /daemon/status); DaemonError when it does not answer in time."""
        import httpx

        try:
            resp = self._http.get("/daemon/status", timeout=timeout)
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DaemonError(f"{self.paths.socket}: no answer ({type(exc).__name__})") from None

    def stream(self, question: str, history: Sequence[Any] | None = None) -> Iterator[Any]:
        """Yield the answer's text as the server generates it, then the finished answer. Closing this generator
        (Ctrl-C) closes the connection, and the server stops generating."""
        import httpx

        body = {"question": question, "history": [list(h) for h in history or []], "source_glob": self.source_glob}
        started = False
        try:
            with self._http.stream("POST", "/daemon/ask", json=body,
                                   timeout=httpx.Timeout(HEALTH_TIMEOUT, read=None)) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise DaemonError(f"the background rag server refused the question: {resp.text[:300]}")
                for line in resp.iter_lines():
                    started = True
                    event = json.loads(line)
                    if "text" in event:
                        yield event["text"]
                    elif "answer" in event:
                        yield remote_answer(event["answer"])
                    else:
                        raise DaemonError(event.get("error") or "the background rag server failed")
        except httpx.HTTPError as exc:
            closed = isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError)) and not started
            if isinstance(exc, httpx.ConnectError) or closed:
                # Refused, or closed before a byte of answer: it was exiting (keep_alive) as the question came.
                raise DaemonGone(f"{self.paths.socket}: the background rag server is gone") from None
            raise DaemonError(f"the background rag server stopped answering ({type(exc).__name__}); "
                              f"its log: {self.paths.log}") from None

    def close(self) -> None:
        self._http.close()
