"""A LangChain `Embeddings` over a local sentence-transformers model (CPU, normalised vectors), or
(`RemoteEmbeddings`, when `embedding_url` is set) over an OpenAI-compatible embeddings endpoint.

Two ways to run the same model (`backend`):

- "torch": float32, sentence-transformers' own `encode`.
- "bf16": the transformer's weights and activations in bfloat16, its linear layers as oneDNN matmuls with the
  weights packed once (bias, BERT's GELU and residual adds fused into them), pooling and normalisation in
  float32; texts tokenized once and batched by token count, each batch padded to a multiple of 16 tokens so
  that oneDNN reuses its compiled kernels. Measured against float32 on the same chunks (cosine with the float32
  vectors 0.9999; SciFact nDCG@10 within 0.001, notes/ingest-findings.md): about 2.2x on a CPU with
  AVX512-BF16 (AMD Zen 4), 2.5x with Intel AMX (before the fusions). Without either (AVX2 or plain AVX-512
  CPUs) bfloat16 is emulated and slower than float32, so "auto" does not pick it there.
- "auto" (default): "bf16" when the CPU has AMX-BF16 or AVX512-BF16 and torch can use it, else "torch".
"""

from __future__ import annotations

import functools
from pathlib import Path

from langchain_core.embeddings import Embeddings

BACKENDS = ("auto", "torch", "bf16")
PAD_MULTIPLE = 16  # pad each batch to a multiple of this many tokens: few distinct shapes, kernels reused


class EmbeddingError(ValueError):
    """An embedding backend that does not exist or cannot run here."""


@functools.cache
def native_bf16_available() -> bool:
    """True when this CPU multiplies bfloat16 in hardware and torch (oneDNN) may use it: AMX-BF16 (Intel
    Sapphire Rapids and later; the kernel must grant the tiles) or AVX512-BF16 (AMD Zen 4 and later, Intel
    Cooper Lake). On AMX the bf16 path measured ~2.5x float32, on an AVX512-BF16 AMD EPYC 2.2x."""
    try:
        import torch

        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        caps = torch._C._cpu._get_cpu_capability() if hasattr(torch._C._cpu, "_get_cpu_capability") else {}
        if caps.get("avx512_bf16", False):
            return True
        cpu = getattr(torch, "cpu", None)
        if cpu is None or not hasattr(cpu, "_is_amx_tile_supported") or not hasattr(cpu, "_init_amx"):
            return False
        if caps and not caps.get("amx_bf16", False):
            return False
        # _init_amx asks Linux for permission to use the tile registers (arch_prctl); False when refused.
        return bool(cpu._is_amx_tile_supported() and cpu._init_amx())
    except Exception:  # an odd torch build or platform: the safe answer is "no"
        return False


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend "auto" stands for on this machine; other names are checked and returned."""
    if backend not in BACKENDS:
        raise EmbeddingError(f"embedding backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "bf16" if device == "cpu" and native_bf16_available() else "torch"
    if backend == "bf16" and device != "cpu":
        raise EmbeddingError(f"embedding backend 'bf16' is for the CPU, not device {device!r}")
    return backend


class LocalEmbeddings(Embeddings):
    """Embeds with a sentence-transformers model loaded from a local folder; never touches a hub.

    Vectors are L2-normalised, so cosine similarity is a dot product and Chroma's cosine distance is
    `1 - similarity`.
    """

    def __init__(self, model_dir: Path, name: str, batch_size: int = 32, device: str = "cpu", backend: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        self.backend = resolve_backend(backend, device)
        hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar on every load
        self.name = name
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.max_tokens = int(self.model.max_seq_length) - 2  # [CLS] and [SEP] take two of the window
        self.dimension = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension())
        if self.backend == "bf16":
            import torch

            self.model[0].to(torch.bfloat16)  # the transformer only: pooling and normalising stay float32
            self.packed_linears = _pack_linears(self.model[0])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if self.backend == "bf16":
            return self._encode_bf16(list(texts)).tolist()
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def _encode_bf16(self, texts: list[str]):
        import numpy as np
        import torch

        transformer, rest = self.model[0], list(self.model)[1:]
        tokenizer = self.model.tokenizer
        # Tokenized once, then batched by token count (longest first): batches of equal length waste almost
        # nothing on padding. Sorting by characters, as sentence-transformers does, padded ~17% more tokens on
        # the Debian reference's chunks.
        encoded = tokenizer(texts, truncation=True, max_length=int(self.model.max_seq_length))
        keys = list(encoded.keys())
        order = sorted(range(len(texts)), key=lambda i: -len(encoded["input_ids"][i]))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = dict(tokenizer.pad({k: [encoded[k][i] for i in idx] for k in keys},
                                              pad_to_multiple_of=PAD_MULTIPLE, return_tensors="pt"))
                features = transformer(features)
                features["token_embeddings"] = features["token_embeddings"].float()
                for module in rest:  # pooling (and whatever else the model stacks after the transformer)
                    features = module(features)
                out[idx] = features["sentence_embedding"].float().numpy()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@functools.cache
def _packed_classes():
    """`PackedLinear` and `PackedResidual`, defined on first use so that importing this module does not import
    torch."""
    import torch

    class PackedLinear(torch.nn.Module):
        """A bfloat16 `nn.Linear` as one oneDNN matmul with its weight reordered once and the bias fused, instead
        of PyTorch's addmm, which copies the bias into the output and re-lays the weight out on every call.
        `activation="gelu"` also fuses an exact (erf) GELU into the matmul, saving a pass over the 4x wide
        intermediate activations."""

        def __init__(self, linear: torch.nn.Linear, activation: str = "none") -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.activation = activation
            weight = linear.weight.detach().to(torch.bfloat16)
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, 2048), persistent=False)
            bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
            self.register_buffer("bias", bias, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            algorithm = "none" if self.activation == "gelu" else ""  # "none": erf GELU, not the tanh estimate
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed_weight, self.bias,
                                                   self.activation, [], algorithm)
            return y.reshape(*shape[:-1], self.out_features)

    class PackedResidual(torch.nn.Module):
        """BERT's `LayerNorm(dense(x) + residual)` (BertSelfOutput, BertOutput; dropout is off at inference) with
        the residual added inside the matmul."""

        def __init__(self, block: torch.nn.Module) -> None:
            super().__init__()
            self.dense = PackedLinear(block.dense)
            self.LayerNorm = block.LayerNorm

        def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
            shape, dense = hidden_states.shape, self.dense
            y = torch.ops.mkldnn._linear_pointwise.binary(hidden_states.reshape(-1, shape[-1]),
                                                          input_tensor.reshape(-1, input_tensor.shape[-1]),
                                                          dense.packed_weight, dense.bias, "add")
            return self.LayerNorm(y.reshape(*shape[:-1], dense.out_features))

    return PackedLinear, PackedResidual


def _fast_replacement(child):
    """The packed stand-in for `child` and a probe input tuple to check it on, or None when there is none."""
    import torch

    packed_linear, packed_residual = _packed_classes()

    def probe(*widths: int) -> tuple:  # a random bfloat16 input (3 texts of 5 tokens) per argument
        return tuple(torch.randn(3, 5, w, dtype=torch.bfloat16) for w in widths)

    if type(child) is torch.nn.Linear:
        return packed_linear(child), probe(child.in_features)
    try:
        from transformers.activations import GELUActivation
        from transformers.models.bert import modeling_bert as bert
    except ImportError:
        return None
    if (type(child) is bert.BertIntermediate and type(child.dense) is torch.nn.Linear
            and type(child.intermediate_act_fn) is GELUActivation and child.intermediate_act_fn.act is torch.nn.functional.gelu):
        return packed_linear(child.dense, "gelu"), probe(child.dense.in_features)
    if type(child) in (bert.BertSelfOutput, bert.BertOutput) and type(child.dense) is torch.nn.Linear:
        return packed_residual(child), probe(child.dense.in_features, child.dense.out_features)
    return None


def _pack_linears(module) -> int:
    """Swap the linear layers under `module` (already bfloat16) for packed oneDNN matmuls: BERT's feed-forward
    layer with its GELU fused, its output layers with the residual add fused, every other `nn.Linear` alone.
    Each stand-in is checked against the layer it replaces on a random input first; one that disagrees (or
    oneDNN ops this torch lacks) leaves that layer as it was. Returns how many layers were swapped."""
    import torch

    swaps, seen = [], set()
    for parent in module.modules():
        if id(parent) in seen:
            continue
        for name, child in parent.named_children():
            try:
                found = _fast_replacement(child)
            except Exception:  # internal oneDNN ops missing or refusing this build
                found = None
            if found is None:
                continue
            fast, probe = found
            seen.update(id(m) for m in child.modules())  # its own linear layers are inside the stand-in now
            swaps.append((parent, name, child, fast, probe))
    swapped = 0
    with torch.inference_mode():
        for parent, name, child, fast, probe in swaps:
            try:
                ok = torch.allclose(fast(*probe).float(), child(*probe).float(), atol=0.1, rtol=0.05)
            except Exception:
                ok = False
            if ok:
                setattr(parent, name, fast)
                swapped += 1
    return swapped


# --- embeddings from an OpenAI-compatible endpoint ------------------------------------------------------------

def embedding_identity(name: str, url: str | None) -> str:
    """What the store records as its embedding model: the name for a local model (unchanged, so existing stores
    stay valid), name and URL for a remote one, so that vectors of two different models never mix."""
    return f"{name} @ {url.rstrip('/')}" if url else name


class RemoteEmbeddings(Embeddings):
    """Embeds on an OpenAI-compatible `/embeddings` endpoint (llama_cpp.server --embedding true, llama-server
    --embedding, vLLM, Ollama, TEI). Vectors are L2-normalised here (servers differ), like `LocalEmbeddings`."""

    def __init__(self, url: str, name: str, api_key: str | None = None, batch_size: int = 32) -> None:
        import httpx
        from langchain_openai import OpenAIEmbeddings

        self.url = url
        self.name = embedding_identity(name, url)
        self.batch_size = batch_size
        self._client = OpenAIEmbeddings(
            model=name,
            base_url=url,
            api_key=api_key or "not-needed",  # local servers want no key; the openai client insists on one
            # True would tokenize every text with tiktoken first, which downloads its tables from the internet
            # and counts with OpenAI's tokenizer, not the server's.
            check_embedding_ctx_length=False,
            chunk_size=batch_size,
            # The openai client asks for base64 by default, which not every local server implements.
            model_kwargs={"encoding_format": "float"},
            timeout=httpx.Timeout(300.0, connect=5.0),
            max_retries=1,
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        import warnings

        from rag.models.packaged import ModelError

        try:
            with warnings.catch_warnings():
                # A per-token answer (below) does not match the openai client's pydantic types: it warns.
                warnings.simplefilter("ignore")
                raw = self._client.embed_documents(list(texts))
        except Exception as exc:
            raise ModelError(_embedding_error(exc, self.url)) from None
        return [_pool_and_normalise(v) for v in raw]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def _pool_and_normalise(vector) -> list[float]:
    import numpy as np

    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim == 2:
        # llama_cpp.server returns one vector per token for a GGUF without a pooling type (a chat model run
        # with --embedding true): mean pooling, as sentence-transformers does.
        arr = arr.mean(axis=0)
    norm = float(np.linalg.norm(arr))
    return (arr / norm if norm > 0 else arr).tolist()


def _embedding_error(exc: Exception, url: str) -> str:
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return (f"cannot reach the embeddings server at {url}: start it (for example `python -m llama_cpp.server "
                "--model FILE.gguf --embedding true --port PORT`) or unset embedding_url (RAG_EMBEDDING_URL)")
    if isinstance(exc, openai.APIStatusError):
        detail = " ".join(str(getattr(exc, "message", exc)).split())[:300]
        return f"the embeddings server at {url} refused the request (HTTP {exc.status_code}: {detail})"
    return f"the embeddings server at {url} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
