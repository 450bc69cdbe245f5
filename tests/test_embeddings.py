"""The two local embedding backends run the same packaged MiniLM: the bfloat16 one (packed and fused oneDNN
layers, batches by token count) must give the float32 vectors, in the caller's order, whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest

from rag.embeddings import EmbeddingError, LocalEmbeddings, native_bf16_available, resolve_backend
from rag.models.packaged import embedding_model_path


TEXTS = [
    "What does apt-get do?",
    "Debian is a free operating system. " * 3,
    "The package manager resolves dependencies, downloads packages from the configured mirrors and unpacks them "
    "in the right order, running maintainer scripts along the way.",
    "长城是中国古代的军事防御工程，修筑的历史可上溯到西周时期。",
    "word " * 400,  # longer than the model reads (256 tokens): truncated, like sentence-transformers does
    "",
    "x",
]


@pytest.fixture(scope="module")
def backends():
    model_dir = embedding_model_path("all-MiniLM-L6-v2")
    return (LocalEmbeddings(model_dir, "all-MiniLM-L6-v2", backend="torch"),
            LocalEmbeddings(model_dir, "all-MiniLM-L6-v2", backend="bf16"))


def _cos(a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_vectors_match_float32(backends):
    fp32, bf16 = backends
    a, b = fp32.embed_documents(TEXTS), bf16.embed_documents(TEXTS)
    assert np.asarray(b).shape == (len(TEXTS), fp32.dimension)
    assert _cos(a, b).min() > 0.999
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # and not merely close to each other: different texts stay apart
    assert _cos(b[:1], b[1:2])[0] < 0.95


def test_bf16_order_and_batching_do_not_change_a_vector(backends):
    _, bf16 = backends
    alone = [bf16.embed_query(t) for t in TEXTS]
    together = bf16.embed_documents(TEXTS)
    reversed_ = bf16.embed_documents(TEXTS[::-1])[::-1]
    assert _cos(alone, together).min() > 0.9999
    assert _cos(together, reversed_).min() > 0.9999
    assert bf16.embed_documents([]) == []


def test_bf16_batches_larger_than_one_batch(backends):
    fp32, bf16 = backends
    texts = [f"chunk number {i}: " + "some words about packages " * (i % 17) for i in range(3 * bf16.batch_size + 5)]
    assert _cos(fp32.embed_documents(texts), bf16.embed_documents(texts)).min() > 0.999


def test_bf16_layers_are_packed_where_onednn_has_bfloat16(backends):
    import torch

    _, bf16 = backends
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU/torch has no oneDNN bfloat16: the plain bfloat16 layers are used (tested above)")
    # MiniLM-L6: per layer 3 projections, 2 residual outputs, 1 feed-forward with GELU; plus the pooler
    assert bf16.packed_linears == 6 * 6 + 1
    names = {type(m).__name__ for m in bf16.model[0].modules()}
    assert {"PackedLinear", "PackedResidual"} <= names
    assert "BertIntermediate" not in names and "BertOutput" not in names


def test_backend_names():
    assert resolve_backend("torch") == "torch"
    assert resolve_backend("bf16") == "bf16"
    assert resolve_backend("auto") == ("bf16" if native_bf16_available() else "torch")
    assert resolve_backend("auto", device="cuda") == "torch"
    with pytest.raises(EmbeddingError, match="expected one of auto, torch, bf16"):
        resolve_backend("onnx")
    with pytest.raises(EmbeddingError, match="for the CPU"):
        resolve_backend("bf16", device="cuda")
