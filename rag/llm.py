"""The chat model: a GGUF run in-process by llama.cpp (through LangChain's ChatLlamaCpp), with the
model's own chat template."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import PrivateAttr

from rag.config import Settings
from rag.models import ModelError, physical_cores


def _chat_llama_cpp_class() -> type:
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; our users need not see it.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp

    class SerializedChatLlamaCpp(ChatLlamaCpp):
        """ChatLlamaCpp whose calls take turns: one llama.cpp context is not thread-safe, and LangChain's
        batch and async forms call it from several threads (two at once crash the process)."""

        _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return super()._generate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with self._lock:
                yield from super()._stream(*args, **kwargs)

    return SerializedChatLlamaCpp


def load_chat_model(model_path: Path, settings: Settings) -> BaseChatModel:
    """Load a GGUF once; the returned LangChain chat model streams tokens and is safe to share across threads."""
    try:
        return _chat_llama_cpp_class()(
            model_path=str(model_path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads or physical_cores(),
            n_batch=settings.n_batch,  # ChatLlamaCpp's default of 8 makes prompt processing several times slower
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
