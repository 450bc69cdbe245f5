"""The "bf16" backend: the model's transformer converted by OpenVINO and run in bfloat16 on CPUs that do it in
hardware (float32 elsewhere), texts batched by token count, pooling in float32; and the CPU check for "auto"."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

PAD_MULTIPLE = 16  # pad each batch to a multiple of this many tokens: few distinct shapes, kernels reused
CPUINFO = Path("/proc/cpuinfo")
OPENVINO_PIN = "openvino==2026.4.1"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags of the first CPU in a Linux /proc/cpuinfo text (empty when it lists none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def bf16_in_hardware(flags: set[str]) -> bool:
    """True for a CPU that multiplies bfloat16 in hardware: AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake)
    or AMX-BF16 (Intel Sapphire Rapids and later). Elsewhere bfloat16 is emulated and slower than float32."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def native_bf16_available() -> bool:
    """True when this CPU does bfloat16 in hardware (read from /proc/cpuinfo; False where there is none)."""
    try:
        return bf16_in_hardware(cpu_flags(CPUINFO.read_text(errors="replace")))
    except OSError:
        return False


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def import_openvino():
    """`openvino`, with its model converter's telemetry off. The converter reports every conversion to Google
    Analytics unless a consent file in the user's home says no (or CI=true); when its telemetry package cannot be
    imported it uses a silent stub, so the package is made unimportable while openvino's modules load."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    saved = sys.modules.get("openvino_telemetry")
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # None: `import` raises ImportError
    try:
        import openvino
    finally:
        if saved is None:
            del sys.modules["openvino_telemetry"]
        else:
            sys.modules["openvino_telemetry"] = saved
    return openvino


def compile_config(bf16: bool, threads: int) -> dict[str, str]:
    """OpenVINO CPU settings: bfloat16 inference where asked (else OpenVINO's float32), and as many threads as
    torch uses, so that a limit set for torch (ingest workers) holds here too."""
    config = {"INFERENCE_NUM_THREADS": str(threads)}
    if bf16:
        config["INFERENCE_PRECISION_HINT"] = "bf16"
    return config


def ir_path(model_dir: Path, cache_dir: Path, version: str) -> Path:
    """Where the converted model of `model_dir` is kept: named by the folder, its files' sizes and times, and the
    OpenVINO version, so that a changed model or OpenVINO converts anew."""
    digest = hashlib.sha256(f"{model_dir.resolve()}\n{version}".encode())
    for f in sorted(p for p in model_dir.iterdir() if p.is_file()):
        st = f.stat()
        digest.update(f"\n{f.name} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_dir / "openvino" / digest.hexdigest()[:24] / "transformer.xml"


def openvino_model(model, model_dir: Path, cache_dir: Path | None):
    """The OpenVINO model of a SentenceTransformer's transformer: read from `cache_dir` when converted before,
    else converted (some seconds) and, with a `cache_dir`, saved there for the next process."""
    ov = import_openvino()
    path = None if cache_dir is None else ir_path(Path(model_dir), Path(cache_dir), ov.get_version())
    if path is not None and path.is_file():
        return ov.Core().read_model(str(path))
    sample = dict(model.tokenizer(["a sample text", "and a longer sample text"], padding=True, return_tensors="pt"))
    with warnings.catch_warnings():
        # Tracing warns where transformers' masking code turns a tensor into a Python bool; for BERT both
        # branches it names are fixed (no extra key/value length, a mask always given), and the tests compare
        # the converted model's vectors with float32 ones over different batch shapes.
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model[0].model.eval(), example_input=sample)
    if path is not None:
        _save(ov, converted, path)
    return converted


def _save(ov, model, path: Path) -> None:
    """Save `model` at `path` whole or not at all: written beside it, then renamed into place. A process that
    converted at the same time may have won; an unwritable cache costs the conversion next time, nothing more."""
    tmp = None
    try:
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent.parent))
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)  # keep the float32 weights
        os.replace(tmp, path.parent)
    except OSError:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def convert_model_folder(model_dir: Path, cache_dir: Path | None):
    """The OpenVINO model of the sentence-transformers model in `model_dir`, converted from the full model (loads
    torch and sentence-transformers: 10-20 s) and saved in `cache_dir`; for a process that found no converted one."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return openvino_model(model, model_dir, cache_dir)


class InferRequests:
    """A compiled OpenVINO model callable from several threads at once (LangChain's async forms embed in executor
    threads): each thread gets its own infer request, as one request runs one call at a time ("Infer Request is
    busy"). Called with numpy inputs by name; returns the first output (a copy)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.inputs = [p.get_any_name() for p in compiled.inputs]
        self._requests = threading.local()

    def __call__(self, inputs: dict):
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        out = request.infer({k: inputs[k] for k in self.inputs if k in inputs})  # outputs copied
        return out[self.compiled.output(0)]


class OpenVINOTransformer:
    """A SentenceTransformer's transformer run by OpenVINO on the CPU: features -> features with
    "token_embeddings", as `encode_by_tokens` wants. Safe to call from several threads at once (`InferRequests`)."""

    def __init__(self, model, model_dir: Path, cache_dir: Path | None, bf16: bool) -> None:
        import torch

        ov = import_openvino()
        config = compile_config(bf16, torch.get_num_threads())
        compiled = ov.Core().compile_model(openvino_model(model, model_dir, cache_dir), "CPU", config)
        self.run = InferRequests(compiled)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f32"

    def __call__(self, features: dict) -> dict:
        import torch

        out = self.run({k: v.numpy() for k, v in features.items() if hasattr(v, "numpy")})
        return {**features, "token_embeddings": torch.from_numpy(out)}


def encode_by_tokens(model, texts: Sequence[str], batch_size: int, forward: Callable | None = None):
    """Normalised float32 vectors of `texts` (a numpy array, in their order) from a SentenceTransformer whose
    transformer is `forward` (default: its own first module): features -> features with "token_embeddings".

    Texts are tokenized once, then batched by token count (longest first), so that batches of equal length
    waste almost nothing on padding; sorting by characters, as sentence-transformers does, padded ~17% more
    tokens on the Debian reference's chunks. Pooling (the modules after the transformer) runs in float32."""
    import numpy as np
    import torch

    forward, rest, tokenizer = forward or model[0], list(model)[1:], model.tokenizer
    encoded = tokenizer(list(texts), truncation=True, max_length=int(model.max_seq_length))
    keys = list(encoded.keys())
    order = sorted(range(len(texts)), key=lambda i: -len(encoded["input_ids"][i]))
    out = np.empty((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            features = dict(tokenizer.pad({k: [encoded[k][i] for i in idx] for k in keys},
                                          pad_to_multiple_of=PAD_MULTIPLE, return_tensors="pt"))
            features = forward(features)
            features["token_embeddings"] = features["token_embeddings"].float()
            for module in rest:  # pooling (and whatever else the model stacks after the transformer)
                features = module(features)
            out[idx] = features["sentence_embedding"].float().numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
