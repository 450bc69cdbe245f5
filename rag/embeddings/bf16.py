"""The "bf16" backend's parts: whether this CPU and torch can run it, the transformer's linear layers swapped for
packed oneDNN bfloat16 matmuls (GELU and residual adds fused), and the encode that batches texts by token count.

The packed layers stand on torch's private oneDNN ops (`torch.ops.mkldnn._linear_pointwise` and kin), so they
are used only with the torch releases in `TESTED_TORCH`; any other torch gets sentence-transformers' float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

PAD_MULTIPLE = 16  # pad each batch to a multiple of this many tokens: few distinct shapes, kernels reused
# The torch releases (major.minor) whose private oneDNN ops the packed layers were checked on.
TESTED_TORCH = ("2.13",)
CPUINFO = Path("/proc/cpuinfo")


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


def torch_tested(version: str) -> bool:
    """True when the packed layers were checked on this torch release ("2.13.0+cpu" -> "2.13")."""
    return ".".join(version.split("+")[0].split(".")[:2]) in TESTED_TORCH


def fused_path_usable() -> bool:
    """True when this torch is one the packed layers were checked on, and it was built with oneDNN."""
    import torch

    return torch_tested(str(torch.__version__)) and torch.backends.mkldnn.is_available()


@functools.cache
def native_bf16_available() -> bool:
    """True when "auto" should pick "bf16": the CPU does bfloat16 in hardware and torch may use the packed
    layers. Measured ~2.5x float32 with Intel AMX and 2.2x on an AVX512-BF16 AMD EPYC."""
    try:
        flags = cpu_flags(CPUINFO.read_text(errors="replace"))
    except OSError:  # not Linux: no flags to read, so the safe answer
        return False
    return bf16_in_hardware(flags) and fused_path_usable()


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


def _replacements(module) -> list[tuple]:
    """(parent, name, child, stand-in, probe) for each layer under `module` that has a packed stand-in."""
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
    return swaps


def pack_linears(module) -> int:
    """Swap the linear layers under `module` (already bfloat16) for packed oneDNN matmuls: BERT's feed-forward
    layer with its GELU fused, its output layers with the residual add fused, every other `nn.Linear` alone.
    Each stand-in is checked against the layer it replaces on a random input first; one that disagrees (or
    oneDNN ops this torch lacks) leaves that layer as it was. Returns how many layers were swapped."""
    import torch

    swapped = 0
    with torch.inference_mode():
        for parent, name, child, fast, probe in _replacements(module):
            try:
                ok = torch.allclose(fast(*probe).float(), child(*probe).float(), atol=0.1, rtol=0.05)
            except Exception:
                ok = False
            if ok:
                setattr(parent, name, fast)
                swapped += 1
    return swapped
