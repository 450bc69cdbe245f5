"""The two local embedding backends run the same packaged MiniLM: the bfloat16 one (OpenVINO, batches by token
count) must give the float32 vectors, in the caller's order, whatever the batch; "auto" chooses it only on CPUs
that do bfloat16 in hardware and falls back to float32 without OpenVINO; the factory picks remote or local from
the settings. The question path's light embedder (tokenizers + OpenVINO float32, no torch) gives
sentence-transformers' own vectors on real dev-set questions."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag.config import Settings
from rag.embeddings import (EmbeddingError, LightEmbeddings, LocalEmbeddings, RemoteEmbeddings, bf16, make_embeddings,
                            make_query_embeddings, native_bf16_available, read_recipe, resolve_backend)
from rag.embeddings.light import Recipe
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


MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def backends(cache_dir):
    model_dir = embedding_model_path(MODEL)
    return (LocalEmbeddings(model_dir, MODEL, backend="torch"),
            LocalEmbeddings(model_dir, MODEL, backend="bf16", cache_dir=cache_dir))


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


def test_bf16_embeds_from_several_threads_at_once(backends):
    _, fast = backends
    alone = fast.embed_documents(TEXTS)
    start = threading.Barrier(3)

    def embed(texts):
        start.wait()  # all three calls reach OpenVINO together
        return fast.embed_documents(texts)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(embed, [TEXTS, TEXTS[::-1], TEXTS]))
    assert _cos(results[0], alone).min() > 0.9999
    assert _cos(results[1][::-1], alone).min() > 0.9999
    assert _cos(results[2], alone).min() > 0.9999


def test_bf16_runs_in_bfloat16_where_the_cpu_has_it(backends):
    if not native_bf16_available():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: OpenVINO runs in float32 (tested above)")
    _, fast = backends
    assert fast.transformer.precision == "bf16"


def test_openvino_runs_with_the_settings_asked_for():
    assert bf16.compile_config(True, 3) == {"INFERENCE_NUM_THREADS": "3", "INFERENCE_PRECISION_HINT": "bf16"}
    assert bf16.compile_config(False, 1) == {"INFERENCE_NUM_THREADS": "1"}


def test_openvino_converter_telemetry_is_the_silent_stub(backends):
    import openvino.tools.ovc.convert_impl as converter
    import openvino.tools.ovc.telemetry_utils as telemetry

    assert converter.tm.__name__ == telemetry.tm.__name__ == "openvino.tools.ovc.telemetry_stub"


def test_the_converted_model_is_read_back_from_the_cache(backends, cache_dir, monkeypatch):
    _, fast = backends
    assert len(list((cache_dir / "openvino").glob("*/transformer.xml"))) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(bf16.import_openvino(), "convert_model", no_conversion)
    again = LocalEmbeddings(embedding_model_path(MODEL), MODEL, backend="bf16", cache_dir=cache_dir)
    assert np.allclose(again.embed_documents(TEXTS), fast.embed_documents(TEXTS), atol=1e-6)
    assert len(list((cache_dir / "openvino").iterdir())) == 1  # no leftover temporary folder


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
    assert resolve_backend("auto") == expected


def test_auto_without_cpuinfo_is_float32(tmp_path, monkeypatch, fresh_detection):
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "missing")
    assert resolve_backend("auto") == "torch"


def test_without_openvino_auto_falls_back_to_float32(backends, tmp_path, monkeypatch, fresh_detection):
    fp32, _ = backends
    (tmp_path / "cpuinfo").write_text(AMX)
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "cpuinfo")
    monkeypatch.setattr(bf16, "openvino_installed", lambda: False)
    fallback = make_embeddings(Settings(embedding_backend="auto"))
    assert (fallback.backend, fallback.transformer) == ("torch", None)
    assert np.allclose(fallback.embed_documents(TEXTS), fp32.embed_documents(TEXTS), atol=1e-6)
    with pytest.raises(EmbeddingError, match=r"runs on OpenVINO: pip install openvino==2026\.4\.1"):
        resolve_backend("bf16")


def test_the_factory_picks_remote_or_local_from_the_settings():
    remote = make_embeddings(Settings(embedding_url="http://127.0.0.1:9/v1/", embedding_model="nomic"))
    assert type(remote) is RemoteEmbeddings
    assert remote.name == "nomic @ http://127.0.0.1:9/v1"
    local = make_embeddings(Settings(embedding_backend="torch"))
    assert (type(local), local.backend, local.name) == (LocalEmbeddings, "torch", "all-MiniLM-L6-v2")


# --- the question path's light embedder ------------------------------------------------------------------------
def _dev_texts(shared, n: int = 200) -> list[str]:
    """`n` SciFact claims, `n` CMRC2018 questions (Chinese) and 40 SciFact abstracts (longer than the model reads)."""
    dev = shared / "dev"
    with (dev / "scifact" / "queries.jsonl").open() as fh:
        english = [json.loads(line)["text"] for line in fh][:n]
    cmrc = json.loads((dev / "cmrc2018" / "cmrc2018_dev_part1.json").read_text())
    chinese = [q["query_text"] for passage in cmrc for q in passage["qas"]][:n]
    with (dev / "scifact" / "corpus.jsonl").open() as fh:
        abstracts = [json.loads(next(fh))["text"] for _ in range(40)]
    return english + chinese + abstracts


def test_light_vectors_equal_sentence_transformers(shared, backends, tmp_path):
    fp32, _ = backends
    model_dir = embedding_model_path(MODEL)
    # An empty cache folder: the model is converted from the full one, once, and kept there.
    light = LightEmbeddings(model_dir, MODEL, read_recipe(model_dir), cache_dir=tmp_path)
    assert len(list((tmp_path / "openvino").glob("*/transformer.xml"))) == 1
    texts = _dev_texts(shared) + TEXTS
    assert len(texts) == 447
    reference, got = fp32.embed_documents(texts), light.embed_documents(texts)
    assert np.asarray(got).shape == (447, 384)
    assert _cos(reference, got).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one question alone, as the question path embeds it, and the same text in a batch
    assert _cos([light.embed_query(texts[200])], [reference[200]])[0] >= 0.9999
    assert (light.max_tokens, light.embed_documents([])) == (fp32.max_tokens, [])


def test_light_embedder_reads_the_model_the_bf16_backend_converted(backends, cache_dir, monkeypatch):
    _, fast = backends  # converted into cache_dir when the fixture was built

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(bf16, "convert_model_folder", no_conversion)
    light = make_query_embeddings(Settings(cache_dir=cache_dir))
    assert type(light) is LightEmbeddings
    assert _cos(light.embed_documents(TEXTS), fast.embed_documents(TEXTS)).min() > 0.999


def test_recipe_is_read_from_the_model_folder(tmp_path):
    model_dir = embedding_model_path(MODEL)
    assert read_recipe(model_dir) == Recipe(256, False, "mean_tokens", model_dir / "tokenizer.json")
    # A copy of the model's small files, then stacks the light embedder does not run: the full model runs them.
    for name in ("modules.json", "sentence_bert_config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    shutil.copytree(model_dir / "1_Pooling", tmp_path / "1_Pooling")
    assert read_recipe(tmp_path) == Recipe(256, False, "mean_tokens", tmp_path / "tokenizer.json")
    modules = json.loads((model_dir / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (tmp_path / "modules.json").write_text(json.dumps([*modules, dense]))
    assert read_recipe(tmp_path) is None
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode_cls_token": True}))
    assert read_recipe(tmp_path) is None
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {**pooling, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    assert read_recipe(tmp_path).pooling == "cls_token"


def test_without_openvino_questions_use_the_full_model(monkeypatch, tmp_path):
    monkeypatch.setattr(bf16, "openvino_installed", lambda: False)
    full = make_query_embeddings(Settings(embedding_backend="auto", cache_dir=tmp_path))
    assert (type(full), full.backend) == (LocalEmbeddings, "torch")
    remote = make_query_embeddings(Settings(embedding_url="http://127.0.0.1:9/v1/", embedding_model="nomic"))
    assert type(remote) is RemoteEmbeddings
