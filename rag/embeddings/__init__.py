"""Embeddings: LangChain `Embeddings` backends behind one factory, `make_embeddings(settings, model_dir)`.

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

from pathlib import Path
from typing import TYPE_CHECKING

from rag.embeddings.bf16 import native_bf16_available
from rag.embeddings.local import BACKENDS, EmbeddingError, LocalEmbeddings, resolve_backend
from rag.embeddings.remote import RemoteEmbeddings, embedding_identity

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag.config import Settings

__all__ = ["BACKENDS", "EmbeddingError", "LocalEmbeddings", "RemoteEmbeddings", "embedding_identity",
           "make_embeddings", "native_bf16_available", "resolve_backend"]


def make_embeddings(settings: Settings, model_dir: Path | None = None) -> Embeddings:
    """The embeddings `settings` ask for: the endpoint at `embedding_url` when set, else the local model (in
    `model_dir`, default the folder `embedding_model` names) on the `embedding_backend` that runs here."""
    s = settings
    if s.embedding_url:
        return RemoteEmbeddings(s.embedding_url, s.embedding_model, s.embedding_api_key, s.embedding_batch_size)
    if model_dir is None:
        from rag.models.packaged import embedding_model_path

        model_dir = embedding_model_path(s.embedding_model)
    return LocalEmbeddings(model_dir, s.embedding_model, s.embedding_batch_size, backend=s.embedding_backend,
                           cache_dir=s.cache_dir)
