"""`rag doctor`: check the installation (llama.cpp build, models, store health, privacy switches) and print
each check with its fix."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rag.cli.common import handle_errors, settings, store_option


@click.command()
@store_option
@click.pass_context
@handle_errors
def doctor(ctx: click.Context, store: Path | None) -> None:
    """Check the installation: llama.cpp build (CPU features, GPU), models, store health, privacy switches.

    Exit code 0 when nothing failed, 1 otherwise; each problem comes with a one-line fix.
    """
    from rag import doctor as doc

    failed = False
    for check in doc.run(settings(ctx, store=store)):
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
        click.echo(f"[{mark}] {check.name}: {check.detail}")
        if check.fix:
            click.echo(f"       fix: {check.fix}")
        failed |= check.status == "fail"
    sys.exit(1 if failed else 0)
