"""The `rag` command: the click group and its commands, each a thin shell over `rag.api.RAG` in a module of
its own (documents, ask, doctor, config, models, eval, serve, daemon, watch). Only click is imported until a command
runs."""

from __future__ import annotations

from pathlib import Path

import click

from rag import privacy
from rag.cli import ask, documents
from rag.cli import config as config_cli
from rag.cli import daemon as daemon_cli
from rag.cli import doctor as doctor_cli
from rag.cli import eval as eval_cli
from rag.cli import models as models_cli
from rag.cli import serve as serve_cli
from rag.cli import watch as watch_cli
from rag.cli.common import CONTEXT_SETTINGS


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Settings file (default ./rag.toml, or env RAG_CONFIG).")
@click.version_option(package_name="rag", message="rag %(version)s")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Ask questions about your own documents, answered on this machine with cited sources.

    \b
      rag ingest ./docs            index a folder (PDF, Markdown, text)
      rag ask "your question"      answer with numbered citations (file, page)
      rag chat                     an interactive session with follow-up questions

    Settings come from defaults < rag.toml < RAG_* environment variables < flags.
    Nothing is downloaded and nothing leaves the machine.
    """
    privacy.apply()  # before any command imports chromadb, onnxruntime or huggingface_hub
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


COMMANDS = {**documents.COMMANDS, **ask.COMMANDS, "doctor": doctor_cli.doctor, "config": config_cli.config_,
            "eval": eval_cli.eval_group, "models": models_cli.models_group, "serve": serve_cli.serve, **daemon_cli.COMMANDS,
            **watch_cli.COMMANDS}
for _name, _command in COMMANDS.items():
    main.add_command(_command, name=_name)

if __name__ == "__main__":  # pragma: no cover
    main()
