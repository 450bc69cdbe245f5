"""`rag models`: see, download and choose chat models (a thin click shell over rag/models: gguf.py and hub.py).

    rag models list [--json] [--n-ctx N]          packaged models and the GGUF files of the models folder
    rag models pull REPO FILE [--revision R]      download a GGUF from the Hugging Face hub (the only command
                                                  that goes online), resumable, sha256-checked
    rag models use NAME [--force]                 make it the default: writes `model = "..."` to rag.toml

Only click and the standard library are imported here; everything else is imported when a command runs, so
`rag --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rag.cli.common import CONTEXT_SETTINGS, EXIT_INTERRUPTED, handle_errors, settings as load_settings


def _models_dir(settings: Any, flag: Path | None) -> Path:
    """--models-dir, else the settings' models folder (`models_dir`, else <cache_dir>/models)."""
    from rag.config import models_folder

    return Path(flag).expanduser() if flag else models_folder(settings.cache_dir, settings.models_dir)


def _models_dir_option(fn: Callable) -> Callable:
    return click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder of downloaded GGUF models (setting models_dir; default <cache_dir>/models).")(fn)


def _n_ctx_option(fn: Callable) -> Callable:
    return click.option("--n-ctx", type=click.IntRange(256), default=None,
                        help="Context window the memory is estimated for (default: the n_ctx setting, 4096).")(fn)


@click.group(name="models", context_settings=CONTEXT_SETTINGS)
def models_group() -> None:
    """See, download and choose chat models (GGUF files run by llama.cpp).

    \b
      rag models list                              what is here: size, architecture, context, memory
      rag models pull TheBloke/Llama-2-13B-chat-GGUF llama-2-13b-chat.Q4_K_M.gguf
      rag models use llama-2-13b-chat.Q4_K_M.gguf  make it the default (writes rag.toml)

    Only `pull` uses the network (the Hugging Face hub, or $HF_ENDPOINT).
    """


# --- list -------------------------------------------------------------------------------------------------

@models_group.command(name="list", short_help="Packaged models and the models folder: size, context, memory.")
@_models_dir_option
@_n_ctx_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, models_dir: Path | None, n_ctx: int | None, as_json: bool) -> None:
    """List the packaged models and the GGUF files in the models folder.

    For each: file size, architecture, parameters, quantization, trained context, whether it has a chat
    template, and the memory it needs at the configured context (weights + KV cache + compute buffer).
    The default model is marked with *. Nothing is loaded: only the files' headers are read.
    """
    from rag.models.gguf import available_memory

    settings = load_settings(ctx, n_ctx=n_ctx)
    folder = _models_dir(settings, models_dir)
    rows = collect_models(settings, folder)
    available = available_memory()
    n = settings.n_ctx
    if as_json:
        models = []
        for row in rows:
            entry = row["info"].to_dict(n) if row["info"] is not None else {}
            entry = {"name": row["name"], "source": row["source"], "default": row["default"], "error": row["error"], **entry}
            models.append(entry)
        click.echo(json.dumps({"models_dir": str(folder), "n_ctx": n, "available_memory": available,
                               "default": settings.model, "models": models}, ensure_ascii=False, indent=2))
        return
    click.echo(_table(rows, n, available))
    mem = f"; {_human_bytes(available)} of memory available now" if available else ""
    click.echo(f"\nmodels folder: {folder}\nmemory estimated at n_ctx {n} (weights + KV cache + compute){mem}")
    if available and any(r["info"] is not None and r["info"].memory_bytes(n) > available for r in rows):
        click.echo("! needs more memory than is available now")


def collect_models(settings: Any, folder: Path) -> list[dict[str, Any]]:
    """Rows of `rag models list`: packaged models first, then the models folder, then the configured model when
    it lives elsewhere. Each: name, source, default, info (ModelInfo or None) and error (str or None)."""
    from rag.models.gguf import is_later_shard, packaged_info, read_gguf
    from rag.models.packaged import PACKAGED_CHAT_MODELS, ModelError, SplitGGUF, joined_path

    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    configured = settings.model

    def add(name: str, source: str, default: bool, load: Callable[[], Any]) -> None:
        try:
            info, error = load(), None
        except ModelError as exc:
            info, error = None, str(exc)
        rows.append({"name": name, "source": source, "default": default, "info": info, "error": error})

    for name, model in PACKAGED_CHAT_MODELS.items():
        if isinstance(model, SplitGGUF):
            joined = joined_path(model, settings.cache_dir)
            seen.add(joined.resolve())
            source = "packaged, joined" if joined.is_file() else f"packaged, {model.parts} parts (joined on first use)"
        else:
            source = f"packaged ({model.pip_name.split('==')[0]})"
        add(name, source, configured == name, functools.partial(packaged_info, name, settings.cache_dir))

    configured_path = None if configured in PACKAGED_CHAT_MODELS else Path(configured).expanduser().resolve()
    entries = sorted(folder.iterdir(), key=lambda p: p.name.lower()) if folder.is_dir() else []
    for path in entries:
        if path.name.startswith(".") or path.resolve() in seen:
            continue
        is_model = path.suffix == ".gguf" or path.suffix in (".bin", ".safetensors") or (
            path.is_dir() and (any(path.glob("*.safetensors")) or (path / "config.json").is_file()))
        if not is_model or is_later_shard(path):
            continue
        seen.add(path.resolve())
        add(path.name, "models folder", configured_path == path.resolve(), functools.partial(read_gguf, path))
    if configured_path is not None and configured_path not in seen:
        add(configured, "setting `model`", True, functools.partial(read_gguf, configured_path))
    return rows


def _table(rows: list[dict[str, Any]], n_ctx: int, available: int | None) -> str:
    header = ["", "NAME", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "CHAT", f"MEMORY@{n_ctx}", "SOURCE"]
    body, notes = [], []
    for row in rows:
        info = row["info"]
        mark = "*" if row["default"] else ""
        if info is None:
            body.append([mark, row["name"], "-", "-", "-", "-", "-", "-", "-", row["source"]])
            notes.append(f"  {row['name']}: {row['error']}")
            continue
        need = info.memory_bytes(n_ctx)
        body.append([
            mark, row["name"], _human_bytes(info.file_size), info.architecture or "?", info.params_label,
            info.file_type or "?", f"{info.context_length:,}" if info.context_length else "?",
            "yes" if info.chat_template else "no (base)",
            _human_bytes(need) + ("!" if available and need > available else ""), row["source"],
        ])
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    right = {2, 4, 6, 8}
    lines = ["  ".join(str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in [header, *body]]
    return "\n".join(lines + (["", "problems:", *notes] if notes else []))


def _human_bytes(n: int | None) -> str:
    from rag.models.gguf import human_bytes

    return human_bytes(n) if n is not None else "?"


# --- pull -------------------------------------------------------------------------------------------------

@models_group.command(short_help="Download a GGUF from the Hugging Face hub (resumable, sha256-checked).")
@click.argument("repo")
@click.argument("filename")
@click.option("--revision", default=None, help="Branch, tag or commit of the repository (default main).")
@_models_dir_option
@_n_ctx_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
def pull(ctx: click.Context, repo: str, filename: str, revision: str | None, models_dir: Path | None,
         n_ctx: int | None, quiet: bool) -> None:
    """Download FILENAME of the Hugging Face hub repository REPO into the models folder.

    \b
      rag models pull TheBloke/Llama-2-13B-chat-GGUF llama-2-13b-chat.Q4_K_M.gguf

    An interrupted download continues where it stopped when the same command is run again. The finished file
    is checked against the sha256 the hub publishes, and only then takes its name in the models folder. This
    is the only command that uses the network: $HF_ENDPOINT (default https://huggingface.co), with $HF_TOKEN
    for gated or private repositories; HF_HUB_OFFLINE=1 in your environment forbids it.
    """
    from rag.models import hub
    from rag.models.gguf import human_bytes, memory_problem, quality_warnings, read_gguf
    from rag.models.packaged import ModelError

    settings = load_settings(ctx, n_ctx=n_ctx)
    folder = _models_dir(settings, models_dir)
    if not quiet:
        click.echo(f"{repo}/{filename}: from {hub.endpoint()} into {folder}", err=True)
    verify = None if quiet else (lambda: click.echo("checking sha256…", err=True))
    try:
        result = hub.pull(repo, filename, folder, revision=revision, progress=not quiet, on_verify=verify)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: run the same command again to resume the download", err=True)
        sys.exit(EXIT_INTERRUPTED)
    how = "already there, unchanged" if result.already_present else (
        f"resumed at {human_bytes(result.resumed_from)}" if result.resumed_from else "downloaded")
    check = f"sha256 {result.sha256[:16]}… verified" if result.sha256 else "git sha1 verified"
    click.echo(f"{result.path} ({human_bytes(result.size)}): {how}, {check}")
    try:
        info = read_gguf(result.path)
    except ModelError as exc:
        click.echo(f"warning: {exc}", err=True)
        return
    click.echo(f"{info.architecture}, {info.params_label} parameters, {info.file_type}, trained context "
               f"{info.context_length}, chat template: {'yes' if info.chat_template else 'no'}")
    for line in ([memory_problem(info, settings.n_ctx)] + quality_warnings(info, settings.n_ctx, result.path.name)):
        if line:
            click.echo(f"warning: {line}", err=True)
    click.echo(f"make it the default: rag models use {result.path.name}")


# --- use --------------------------------------------------------------------------------------------------

@models_group.command(short_help="Make a model the default (writes model = \"...\" to rag.toml).")
@click.argument("name")
@_models_dir_option
@_n_ctx_option
@click.option("--force", is_flag=True, help="Accept a model larger than the memory available now.")
@click.pass_context
@handle_errors
def use(ctx: click.Context, name: str, models_dir: Path | None, n_ctx: int | None, force: bool) -> None:
    """Make NAME the default chat model: a packaged name, a file in the models folder, or a path.

    Writes `model = "..."` into the settings file (--config, $RAG_CONFIG or ./rag.toml, created if missing),
    keeping its other settings. The model is checked first: GGML files, GPTQ/safetensors folders and (unless
    --force) models larger than the available memory are refused.
    """
    from rag.config import CONFIG_FILE_NAME, write_setting
    from rag.models.gguf import check_model, packaged_info, read_gguf
    from rag.models.packaged import PACKAGED_CHAT_MODELS, ModelError

    settings = load_settings(ctx, n_ctx=n_ctx)
    folder = _models_dir(settings, models_dir)
    if name in PACKAGED_CHAT_MODELS:
        info = packaged_info(name, settings.cache_dir)
        value, label = name, Path(info.path).name
    else:
        candidates = [Path(name).expanduser(), folder / name, folder / f"{name}.gguf"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            known = ", ".join(PACKAGED_CHAT_MODELS)
            raise ModelError(f"{name}: not a packaged model ({known}), nor a file in {folder}, nor a path")
        path = path.resolve()
        info = read_gguf(path)
        value, label = str(path), path.name
    warnings = check_model(Path(label), settings.n_ctx, force=force, info=info)

    config = ctx.obj.get("config") if ctx.obj else None
    # Where Settings.load reads it from (rag/config.py): --config, else $RAG_CONFIG, else ./rag.toml.
    target = Path(config) if config else Path(os.environ.get("RAG_CONFIG") or CONFIG_FILE_NAME)
    write_setting(target, "model", value)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"default model: {value} (written to {target})")
    if os.environ.get("RAG_MODEL"):
        click.echo(f"note: RAG_MODEL={os.environ['RAG_MODEL']} is set and takes precedence over {target.name}", err=True)

