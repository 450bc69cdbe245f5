"""`rag ps` (the background servers that keep a model warm: socket, store, model, pid, memory, idle time) and
`rag stop` (the ones over the current store, or --all)."""

from __future__ import annotations

from pathlib import Path

import click

from rag.cli.common import handle_errors, settings, store_option


@click.command(name="ps")
@click.pass_context
@handle_errors
def ps(ctx: click.Context) -> None:
    """List the background servers of `rag ask`/`rag chat` that keep a model loaded.

    Each one serves one store with one set of answer settings and exits after keep_alive idle seconds.
    """
    from rag.daemon.lifecycle import running

    rows = running(settings(ctx).cache_dir)
    if not rows:
        click.echo("no background server is running")
        return
    click.echo(f"{'PID':>7}  {'STATE':<13} {'RSS':>9}  {'IDLE':>6}  {'ANSWERED':>8}  {'MODEL':<22} STORE / SOCKET")
    for r in rows:
        rss = f"{r['rss_bytes'] / 2**20:.0f} MB" if r.get("rss_bytes") else "-"
        idle = f"{r['idle_seconds']:.0f} s" if "idle_seconds" in r else "-"
        click.echo(f"{r.get('pid', '-'):>7}  {r['state']:<13} {rss:>9}  {idle:>6}  {r.get('answered', '-'):>8}  "
                   f"{Path(str(r.get('model', '-'))).name:<22} {r.get('store', '-')}\n{'':>74}{r['socket']}")


@click.command(name="stop")
@click.option("--all", "stop_all", is_flag=True, help="Stop every background server, whatever its store.")
@store_option
@click.pass_context
@handle_errors
def stop(ctx: click.Context, stop_all: bool, store: Path | None) -> None:
    """Stop the background servers over the current store (--store, or the store setting), or --all."""
    from rag.daemon.lifecycle import running, stop as stop_one
    from rag.daemon.paths import DaemonPaths

    current = settings(ctx, store=store)
    wanted = str(Path(current.store).expanduser().resolve())
    stopped = 0
    for r in running(current.cache_dir):
        if stop_all or r.get("store") == wanted:
            pid = stop_one(DaemonPaths(Path(r["socket"]).parent, r["key"]))
            click.echo(f"stopped {pid or '(dead)'}: {r.get('store', '?')} ({Path(str(r.get('model', '?'))).name})")
            stopped += 1
    if not stopped:
        click.echo("no background server to stop" + ("" if stop_all else f" for {wanted} (rag stop --all stops every one)"))


COMMANDS = {"ps": ps, "stop": stop}
