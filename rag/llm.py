"""The chat model: a GGUF run in-process by llama.cpp (through LangChain's ChatLlamaCpp), with the
model's own chat template."""

from __future__ import annotations

import warnings
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from rag.config import Settings
from rag.models import ModelError, physical_cores


def load_chat_model(model_path: Path, settings: Settings) -> BaseChatModel:
    """Load a GGUF once; the returned LangChain chat model streams tokens."""
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; our users need not see it.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp

    try:
        return ChatLlamaCpp(
            model_path=str(model_path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads or physical_cores(),
            n_batch=512,  # ChatLlamaCpp's default of 8 makes prompt processing several times slower
            n_gpu_layers=settings.n_gpu_layers,
            # ChatLlamaCpp passes 10000 by default, overriding the GGUF's own RoPE settings (Qwen2.5 uses
            # 1e6); 0 makes llama.cpp read them from the model file.
            rope_freq_base=0.0,
            rope_freq_scale=0.0,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            repeat_penalty=1.05,
            streaming=True,
            verbose=False,
        )
    except ValueError as exc:
        raise ModelError(f"{model_path}: llama.cpp could not load the model ({str(exc).splitlines()[-1][:200]})") from None
