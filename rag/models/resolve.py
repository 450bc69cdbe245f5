"""The `model` setting as a GGUF file llama.cpp can load: a packaged model (the split one joined into the cache
on first use) or the user's own file, refused with a message saying what to get when it is no GGUF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rag.models.gguf import check_format
from rag.models.packaged import PACKAGED_CHAT_MODELS, ModelError, PackagedGGUF, SplitGGUF, join_split_gguf, packaged_file


def chat_model_path(name: str, cache_dir: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Resolve a chat model setting to a local GGUF file, joining packaged parts on first use."""
    model = PACKAGED_CHAT_MODELS.get(name)
    if isinstance(model, PackagedGGUF):
        return packaged_file(model)
    if isinstance(model, SplitGGUF):
        return join_split_gguf(model, cache_dir, progress)
    path = Path(name).expanduser()
    if path.is_dir():
        check_format(path)  # GPTQ / safetensors folder: says it is for GPU runtimes and where GGUFs are
    if not path.is_file():
        known = ", ".join(PACKAGED_CHAT_MODELS)
        raise ModelError(f"{name}: no such model file (give a .gguf path, or one of: {known})")
    check_format(path)  # GGML files (with where to find GGUF versions), safetensors/PyTorch files
    return path
