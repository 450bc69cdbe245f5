"""Embeddings: LangChain `Embeddings` backends behind two factories, `make_embeddings(settings, model_dir)` (ingest)
and `make_query_embeddings` (questions: the same vectors from a runtime that is ready in a fraction of the time).

- light.py: the question path's embedder: tokenizers + OpenVINO float32 + numpy pooling, no torch.
- identity.py: the name the store records a model under (imports nothing).
- remote.py: an OpenAI-compatible endpoint, when `embedding_url` is set.
- local.py: the local sentence-transformers model, as `embedding_backend` says: "torch" is float32,
  sentence-transformers' own `encode`; "bf16" (bf16.py) runs the transformer on OpenVINO, in bfloat16 on a CPU
  with AVX512-BF16 or AMX, texts batched by token count, pooling in float32; "auto" (default) is "bf16" on such
  a CPU, else "torch".

OpenVINO replaced a hand-made bf16 path (oneDNN matmuls with fused GELU and residual adds, on torch's private
ops): measured side by side on an AMX Intel Xeon, it was faster, with cosine 0.99997 to the float32 vectors;
torch.compile under bfloat16 autocast, autocast alone and onnxruntime were slower (benchmarks/bench_embeddings.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.embeddings.identity import embedding_identity

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag.config import Settings

__all__ = ["BACKENDS", "EmbeddingError", "LightEmbeddings", "LocalEmbeddings", "RemoteEmbeddings", "embedding_identity",
           "make_embeddings", "make_query_embeddings", "native_bf16_available", "read_recipe", "resolve_backend"]

# Loaded on first use: LangChain (and with it pydantic's models) takes 0.3 s to import, which a command that only
# needs `embedding_identity` (a re-ingest with nothing to do) should not pay.
_LAZY = {"BACKENDS": "local", "EmbeddingError": "local", "LocalEmbeddings": "local", "resolve_backend": "local",
         "LightEmbeddings": "light", "read_recipe": "light", "RemoteEmbeddings": "remote",
         "native_bf16_available": "bf16"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def make_embeddings(settings: Settings, model_dir: Path | None = None) -> Embeddings:
    """The embeddings `settings` ask for: the endpoint at `embedding_url` when set, else the local model (in
    `model_dir`, default the folder `embedding_model` names) on the `embedding_backend` that runs here."""
    from rag.embeddings.local import LocalEmbeddings
    from rag.embeddings.remote import RemoteEmbeddings

    s = settings
    if s.embedding_url:
        return RemoteEmbeddings(s.embedding_url, s.embedding_model, s.embedding_api_key, s.embedding_batch_size)
    model_dir = _model_dir(s, model_dir)
    return LocalEmbeddings(model_dir, s.embedding_model, s.embedding_batch_size, backend=s.embedding_backend,
                           cache_dir=s.cache_dir)


def make_query_embeddings(settings: Settings, model_dir: Path | None = None) -> Embeddings:
    """The embeddings a question is embedded with: the same vectors as `make_embeddings` gives (float32), from
    `LightEmbeddings` where the model is a plain Transformer + Pooling (+ Normalize) and OpenVINO is installed,
    so that a question imports neither torch nor sentence-transformers; else what `make_embeddings` gives."""
    from rag.embeddings import bf16
    from rag.embeddings.light import LightEmbeddings, read_recipe

    s = settings
    if not s.embedding_url:
        model_dir = _model_dir(s, model_dir)
        recipe = read_recipe(model_dir)
        if recipe is not None and bf16.openvino_installed():
            return LightEmbeddings(model_dir, s.embedding_model, recipe, s.embedding_batch_size, cache_dir=s.cache_dir)
    return make_embeddings(s, model_dir)


def _model_dir(settings: Settings, model_dir: Path | None) -> Path:
    if model_dir is not None:
        return Path(model_dir)
    from rag.models.packaged import embedding_model_path

    return embedding_model_path(settings.embedding_model)
