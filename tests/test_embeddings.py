"""The two local embedding backends run the same packaged MiniLM: the bfloat16 one (packed and fused oneDNN
layers, batches by token count) must give the float32 vectors, in the caller's order, whatever the batch; it is
chosen only on CPUs that do bfloat16 in hardware, and only with a torch it was checked on; the factory picks
remote or local from the settings."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.embeddings import (EmbeddingError, LocalEmbeddings, RemoteEmbeddings, bf16, make_embeddings,
                            native_bf16_available, resolve_backend)
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
    assert resolve_backend("auto", device="cuda") == "torch"
    with pytest.raises(EmbeddingError, match="expected one of auto, torch, bf16"):
        resolve_backend("onnx")
    with pytest.raises(EmbeddingError, match="for the CPU"):
        resolve_backend("bf16", device="cuda")


# /proc/cpuinfo excerpts: the flags line is what the detection reads.
AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2\n"
AVX512_NO_BF16 = "processor\t: 0\nmodel name\t: Intel Xeon Gold 6148\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
AVX512_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
AMX = ("processor\t: 0\nmodel name\t: Intel Xeon Platinum 8481C\n"
       "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes bf16\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (AVX2_ONLY, False), (AVX512_NO_BF16, False), (AVX512_BF16, True), (AMX, True), (ARM, False), ("", False)])
def test_bf16_in_hardware_from_cpuinfo_flags(cpuinfo, expected):
    assert bf16.bf16_in_hardware(bf16.cpu_flags(cpuinfo)) is expected


def test_cpu_flags_reads_the_flags_line():
    assert bf16.cpu_flags(AVX512_BF16) == {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}


@pytest.fixture
def fresh_detection():
    native_bf16_available.cache_clear()
    yield
    native_bf16_available.cache_clear()


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AVX2_ONLY, "torch"), (AVX512_NO_BF16, "torch"),
                                                   (AVX512_BF16, "bf16"), (AMX, "bf16")])
def test_auto_follows_the_cpu(cpuinfo, expected, tmp_path, monkeypatch, fresh_detection):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(bf16, "TESTED_TORCH", ("2.13",))
    monkeypatch.setattr("torch.__version__", "2.13.0+cpu")
    assert resolve_backend("auto") == expected


def test_auto_without_cpuinfo_is_float32(tmp_path, monkeypatch, fresh_detection):
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "missing")
    assert resolve_backend("auto") == "torch"


@pytest.mark.parametrize(("version", "expected"), [
    ("2.13.0", True), ("2.13.0+cpu", True), ("2.13.1", True), ("2.14.0", False), ("2.1.3", False),
    ("2.12.1+cu121", False), ("3.13.0", False)])
def test_torch_versions_the_packed_layers_were_checked_on(version, expected, monkeypatch):
    monkeypatch.setattr(bf16, "TESTED_TORCH", ("2.13",))
    assert bf16.torch_tested(version) is expected


def test_an_untested_torch_falls_back_to_float32(backends, tmp_path, monkeypatch, fresh_detection):
    fp32, _ = backends
    (tmp_path / "cpuinfo").write_text(AMX)
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr("torch.__version__", "2.99.0")
    assert resolve_backend("auto") == "torch"
    fallback = LocalEmbeddings(embedding_model_path("all-MiniLM-L6-v2"), "all-MiniLM-L6-v2", backend="bf16")
    assert (fallback.backend, fallback.packed_linears) == ("torch", 0)
    assert "PackedLinear" not in {type(m).__name__ for m in fallback.model[0].modules()}
    assert np.allclose(fallback.embed_documents(TEXTS), fp32.embed_documents(TEXTS), atol=1e-6)


def test_the_factory_picks_remote_or_local_from_the_settings():
    remote = make_embeddings(Settings(embedding_url="http://127.0.0.1:9/v1/", embedding_model="nomic"))
    assert type(remote) is RemoteEmbeddings
    assert remote.name == "nomic @ http://127.0.0.1:9/v1"
    local = make_embeddings(Settings(embedding_backend="torch"))
    assert (type(local), local.backend, local.name) == (LocalEmbeddings, "torch", "all-MiniLM-L6-v2")
