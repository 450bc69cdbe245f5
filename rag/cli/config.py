"""`rag config`: print every setting with its current value and what it does."""

from __future__ import annotations

import click

from rag.cli.common import handle_errors, settings


@click.command(name="config")
@click.pass_context
@handle_errors
def config_(ctx: click.Context) -> None:
    """Print every setting with its current value and what it does."""
    for name, value, description in settings(ctx).describe():
        click.echo(f"{name} = {value!r}\n    {description}  (env RAG_{name.upper()})")
