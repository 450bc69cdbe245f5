"""`rag serve`: parse flags, load the model once and run the HTTP server (rag/server) with uvicorn.
Only click is imported at the top, so `rag --help` stays fast."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import click

from rag.cli.common import handle_errors, make_rag, model_options, store_option, warn


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes your documents to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--api-key", default=None, help="Require this key (Authorization: Bearer KEY) on every endpoint but /health (env RAG_API_KEY).")
@click.option("--docs", "docs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder whose files /api/ingest may read by path (repeatable); uploads always go to upload_dir.")
@click.option("--upload-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploads are written (default <store>/uploads).")
@click.option("--max-upload-mb", type=click.IntRange(1), default=None, help="Largest upload in MB (default 50).")
@store_option
@model_options
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, api_key: str | None, docs: tuple[Path, ...],
          store: Path | None, **flags: Any) -> None:
    """Serve a browser chat at / and an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    \b
    Also: GET /api/sources, POST /api/ingest (uploads or --docs paths), GET /health.
    One model in this process: requests queue and each gets its whole answer; a client that
    disconnects stops its generation. Listens on 127.0.0.1 unless --host says otherwise.
    """
    import uvicorn

    from rag.server.app import bind, create_app

    rag = make_rag(ctx, store=store, api_key=api_key, **flags)
    try:
        sock = bind(host, port)  # first, so that a taken port is reported before the model loads
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    if not _loopback(host) and not rag.settings.api_key:
        click.echo(f"warning: listening on {host} without --api-key: anyone who can reach this port can read "
                   "your documents", err=True)
    warn(rag.model_warnings)
    rag.store.serve()  # an embedded store is this server's alone: other processes' ingests are refused
    _ = rag.llm  # load now: errors show before the server starts, and the first answer is not slow
    app = create_app(rag, rag.settings, docs=docs)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    click.echo(f"rag serve: {url}/  (model {rag.settings.model}, store {rag.settings.store}"
               f"{', API key required' if rag.settings.api_key else ''}); Ctrl-C stops", err=True)
    sys.stderr.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
