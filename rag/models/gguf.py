"""What a chat model file is, read from its GGUF header without loading the weights, and whether it can run
here: architecture, parameters, quantization, trained context, chat template, the memory it needs at a given
context, and clear refusals for files llama.cpp cannot read (old GGML, GPTQ / safetensors folders) or that do
not fit in memory.

    info = read_gguf(path)                     # ModelInfo; ModelError when it is not a readable GGUF
    warnings = check_model(path, n_ctx=4096)   # ModelError for what cannot run; warnings for what runs badly

The header is read from a memory map of the file, so only its pages are read from disk, never the weights, by a
small reader of the GGUF format that steps over the tokenizer's long arrays: gguf's own GGUFReader (0.19.0) builds
a numpy view of every array element, 22 s and 500 MB for Qwen2.5-1.5B's header, against 0.1 s and a few MB here,
and cannot read part 1 of a split file. The `gguf` package gives the format's numbers (value and tensor types,
quantization block sizes, file types).
"""

from __future__ import annotations

import functools
import json
import math
import mmap
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.models.packaged import PACKAGED_CHAT_MODELS, ModelError, SplitGGUF, joined_path, packaged_file, split_part_paths

# The magics of the pre-GGUF formats llama.cpp dropped in August 2023, as the first four bytes on disk (the
# magic was written as a little-endian uint32, so b"lmgg" is 'ggml'; b"tjgg" is 'ggjt', b"fmgg" is 'ggmf').
GGML_MAGICS = {b"lmgg": "ggml", b"fmgg": "ggmf", b"tjgg": "ggjt", b"ggml": "ggml", b"ggmf": "ggmf", b"ggjt": "ggjt"}
GPU_QUANT_METHODS = {"gptq", "awq", "exl2", "exllama", "exllamav2", "marlin", "bitsandbytes", "aqlm", "hqq", "fp8"}

# llama.cpp's defaults when run by rag/llm.py (n_batch=512, KV cache in f16, no flash attention).
N_BATCH = 512
KV_BYTES = 2  # f16
# An allowance for the rest: the process itself (Python and the llama.cpp library: ~45 MB before any model, in
# benchmarks/bench_models.py) and llama.cpp's smaller allocations (output buffer, vocabulary, graph).
RUNTIME_OVERHEAD = 150 * 2**20


@dataclass
class ModelInfo:
    """What the GGUF header says about a model, plus the figures derived from it."""

    path: str
    file_size: int  # bytes of the whole model (all parts of a split file)
    gguf_version: int
    architecture: str | None
    general_name: str | None  # `general.name`
    size_label: str | None  # `general.size_label`, e.g. "1.5B"
    n_params: int  # counted from the tensor shapes
    file_type: str | None  # "Q4_K_M", "F16", ... (`general.file_type`, else the commonest tensor type)
    context_length: int | None  # trained context, `<arch>.context_length`
    chat_template: bool  # `tokenizer.chat_template` present
    n_layer: int | None = None
    n_embd: int | None = None
    n_ff: int | None = None
    n_head: int | None = None
    n_head_kv: list[int] = field(default_factory=list)  # per layer (one value repeated for most models)
    head_dim_k: int | None = None
    head_dim_v: int | None = None
    n_vocab: int | None = None
    split_count: int = 1  # gguf-split shards (`split.count`)

    @property
    def params_label(self) -> str:
        return self.size_label or human_count(self.n_params)

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """K and V for every layer and position: 2 * n_layer * n_ctx * n_head_kv * head_dim * 2 bytes (f16).

        With per-layer head counts the sum runs over the layers; K and V head sizes may differ (MLA, some
        Gemma). Sliding-window layers (Gemma 2/3) need less than this: the figure is an upper bound."""
        if not self.n_head_kv or not self.head_dim_k:
            return 0  # recurrent models (Mamba, RWKV) keep a fixed-size state instead
        dim = self.head_dim_k + (self.head_dim_v or self.head_dim_k)
        return sum(n_ctx * h * dim * KV_BYTES for h in self.n_head_kv)

    def compute_bytes(self, n_ctx: int, n_batch: int = N_BATCH) -> int:
        """llama.cpp's compute (scratch) buffer for one batch of `n_batch` tokens, in f32.

        It is sized for the largest step of the graph: either the logits of the batch (n_vocab * n_batch) or,
        without flash attention, the attention scores of one layer plus the mask (n_ctx * n_batch *
        (n_head + 1)); plus the activations around them (n_batch * (4 * n_embd + n_ff)). Checked against
        llama.cpp's own report ("CPU compute buffer size"): Qwen2.5-1.5B at n_ctx 4096 306 MiB (this: 326),
        SmolLM2-135M at 8192 166 MiB (this: 168), at 2048 99 MiB (this: 104)."""
        logits = (self.n_vocab or 32000) * n_batch * 4
        scores = n_ctx * n_batch * ((self.n_head or 32) + 1) * 4
        activations = n_batch * (4 * (self.n_embd or 4096) + (self.n_ff or 4 * (self.n_embd or 4096))) * 4
        return max(logits, scores) + activations

    def memory_bytes(self, n_ctx: int) -> int:
        """Memory to run the model at `n_ctx`: weights (the file: llama.cpp maps it and reads every weight for
        every token, so all of it must stay in RAM to run at speed) + KV cache + compute buffer + the runtime.

        On x86 llama.cpp also copies Q4_0/Q4_K/IQ4_NL weights into a "repacked" layout at load; the mapped pages
        of those tensors are not read again, so the kernel can drop them, and the file size still measures the
        weights' share."""
        return self.file_size + self.kv_cache_bytes(n_ctx) + self.compute_bytes(n_ctx) + RUNTIME_OVERHEAD

    def to_dict(self, n_ctx: int | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = self.params_label
        if len(set(self.n_head_kv)) == 1:
            data["n_head_kv"] = self.n_head_kv[0]
        if n_ctx:
            data["n_ctx"] = n_ctx
            data["kv_cache_bytes"] = self.kv_cache_bytes(n_ctx)
            data["compute_bytes"] = self.compute_bytes(n_ctx)
            data["memory_bytes"] = self.memory_bytes(n_ctx)
        return data


def human_count(n: int) -> str:
    """135M, 1.5B, 13B."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """Sizes as people read them: 92 MB, 1.12 GB."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} KB"


# --- reading the header ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LongArray:
    """An array of the header that was stepped over, of which only the length is kept: the tokenizer's
    vocabulary, scores and merges (150,000 entries each in Qwen2.5)."""

    count: int


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the header describes it (its data is never read)."""

    name: str
    shape: tuple[int, ...]  # in GGML order: the row length first
    type_name: str  # "Q4_K", "F32", ...; the number for a type newer than the gguf package
    n_elements: int
    n_bytes: int


@dataclass
class Header:
    """The metadata and tensor list at the start of a GGUF file."""

    version: int
    fields: dict[str, Any]  # key -> int, float, bool, str, list, or LongArray
    tensors: list[TensorInfo]

    def get(self, key: str) -> Any:
        value = self.fields.get(key)
        return None if isinstance(value, LongArray) else value

    def length(self, key: str) -> int | None:
        value = self.fields.get(key)
        return value.count if isinstance(value, LongArray) else len(value) if isinstance(value, list) else None


_LONG_ARRAY = 256  # longer arrays are stepped over


def _scalar_format(vtype: int) -> str:
    """The struct format of a scalar GGUF value type."""
    formats = _scalar_formats()
    if vtype not in formats:
        raise ValueError(f"unknown value type {vtype}")
    return formats[vtype]


@functools.cache
def _scalar_formats() -> dict[int, str]:
    from gguf import GGUFValueType as T

    return {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i", T.UINT64: "Q",
            T.INT64: "q", T.FLOAT32: "f", T.FLOAT64: "d", T.BOOL: "?"}


@functools.cache
def _tensor_types() -> dict[int, tuple[str, int, int]]:
    """GGML tensor type -> (name, elements per block, bytes per block)."""
    from gguf import GGML_QUANT_SIZES

    return {int(t): (t.name, block, size) for t, (block, size) in GGML_QUANT_SIZES.items()}


class _Cursor:
    """Reads the values of a GGUF header front to back (the format: ggml's docs/gguf.md)."""

    def __init__(self, data: mmap.mmap, order: str, pos: int) -> None:
        from gguf import GGUFValueType

        self.data, self.order, self.pos = data, order, pos
        self.string_type, self.array_type = GGUFValueType.STRING, GGUFValueType.ARRAY

    def unpack(self, fmt: str) -> tuple:
        layout = struct.Struct(self.order + fmt)
        values = layout.unpack_from(self.data, self.pos)
        self.pos += layout.size
        return values

    def string(self) -> str:
        (n,) = self.unpack("Q")
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n:
            raise ValueError("a string runs past the end of the file")
        self.pos += n
        return raw.decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype == self.string_type:
            return self.string()
        if vtype == self.array_type:
            return self.array()
        return self.unpack(_scalar_format(vtype))[0]

    def array(self) -> list | LongArray:
        etype, count = self.unpack("IQ")
        if count <= _LONG_ARRAY or etype == self.array_type:
            return [self.value(etype) for _ in range(count)]
        if etype != self.string_type:
            self.pos += count * struct.calcsize(_scalar_format(etype))
            if self.pos > len(self.data):
                raise ValueError("an array runs past the end of the file")
            return LongArray(count)
        step, data, pos = struct.Struct(self.order + "Q").unpack_from, self.data, self.pos
        for _ in range(count):  # strings are stepped over by their lengths, never decoded
            pos += 8 + step(data, pos)[0]
        self.pos = pos
        return LongArray(count)

    def tensor(self) -> TensorInfo:
        name = self.string()
        (n_dims,) = self.unpack("I")
        shape = self.unpack(f"{n_dims}Q")
        raw_type, _offset = self.unpack("IQ")
        type_name, block, size = _tensor_types().get(raw_type, (str(raw_type), 1, 0))
        n = math.prod(shape)
        return TensorInfo(name, shape, type_name, n, n * size // block)


def _read_header(path: Path) -> Header:
    """The header of a GGUF file; struct.error or ValueError when it is damaged or cut short."""
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        (version,) = struct.unpack_from("<I", data, 4)
        order = ">" if version & 0xFFFF == 0 else "<"  # a file written on a big-endian machine
        cursor = _Cursor(data, order, 4)
        (version, n_tensors, n_kv) = cursor.unpack("IQQ")
        if version not in (2, 3):  # version 1 had 32-bit lengths; llama.cpp dropped it in 2023
            raise ValueError(f"GGUF version {version}, which this reader does not know")
        fields = {}
        for _ in range(n_kv):
            key = cursor.string()
            fields[key] = cursor.value(cursor.unpack("I")[0])
        tensors = [cursor.tensor() for _ in range(n_tensors)]
    return Header(version, fields, tensors)


def check_format(path: Path) -> None:
    """ModelError unless `path` is a GGUF file; old GGML files and GPU-only formats get a message saying what
    to get instead. Cheap: reads four bytes (or a folder's file names)."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(_folder_message(path))
    try:
        with path.open("rb") as fh:
            magic = fh.read(8)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if magic[:4] == b"GGUF":
        return
    if magic[:4] in GGML_MAGICS:
        raise ModelError(ggml_message(path, GGML_MAGICS[magic[:4]]))
    if path.suffix == ".safetensors" or _looks_like_safetensors(magic, path):
        raise ModelError(f"{path}: a safetensors checkpoint, for GPU runtimes (transformers, AutoGPTQ, ExLlama, vLLM), "
                         f"not llama.cpp, which runs only GGUF files; {_gguf_hint(_base_name(path.name))}")
    if magic[:4] == b"PK\x03\x04" or magic[:2] in (b"\x80\x02", b"\x80\x04"):
        raise ModelError(f"{path}: a PyTorch checkpoint, not a GGUF file llama.cpp can run; {_gguf_hint(_base_name(path.name))}")
    raise ModelError(f"{path}: not a GGUF model file")


def ggml_message(path: Path, magic: str = "ggjt") -> str:
    """The one-line refusal of a pre-GGUF file."""
    return (f"{path}: an old GGML file (magic '{magic}'); llama.cpp reads only GGUF since August 2023. "
            f"{_capital(_gguf_hint(_base_name(Path(path).name)))}, or convert this file with llama.cpp's "
            "convert_llama_ggml_to_gguf.py")


def read_gguf(path: Path, file_size: int | None = None) -> ModelInfo:
    """The header of a GGUF file as a ModelInfo (weights are not read). `file_size` overrides the size on disk,
    for part 1 of a split file. gguf-split shards (`name-00001-of-00003.gguf`) count all their shards."""
    path = Path(path)
    check_format(path)
    try:
        header = _read_header(path)
    except (struct.error, ValueError, KeyError, IndexError, OverflowError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable GGUF file ({exc}); the file may be truncated or damaged") from None
    info = _info_from_header(header, path, file_size if file_size is not None else path.stat().st_size)
    if info.split_count > 1:
        _add_shards(info, path)
    return info


def _info_from_header(header: Header, path: Path, size: int) -> ModelInfo:
    arch = header.get("general.architecture")
    prefix = f"{arch}." if arch else "\0"  # the architecture's own keys, e.g. "qwen2.context_length"
    return ModelInfo(
        path=str(path),
        file_size=size,
        gguf_version=header.version,
        architecture=arch,
        general_name=header.get("general.name"),
        size_label=header.get("general.size_label"),
        n_params=sum(t.n_elements for t in header.tensors),
        file_type=_file_type(header),
        context_length=header.get(prefix + "context_length"),
        chat_template=any(k == "tokenizer.chat_template" or k.startswith("tokenizer.chat_template.") for k in header.fields),
        n_vocab=_n_vocab(header, prefix),
        split_count=int(header.get("split.count") or 1),
        **_shape(header, prefix),
    )


def _shape(header: Header, prefix: str) -> dict[str, Any]:
    """Layers, widths and attention heads: what the KV cache and compute buffer are sized from."""
    n_layer = header.get(prefix + "block_count")
    n_embd = header.get(prefix + "embedding_length")
    heads = _per_layer(header.get(prefix + "attention.head_count"), n_layer)
    heads_kv = _per_layer(header.get(prefix + "attention.head_count_kv"), n_layer) or heads
    n_head = max(heads) if heads else None
    head_k = header.get(prefix + "attention.key_length") or (n_embd // n_head if n_embd and n_head else None)
    n_ff = header.get(prefix + "feed_forward_length")
    if isinstance(n_ff, list):  # per layer in some models
        n_ff = max(n_ff) if n_ff else None
    return {"n_layer": n_layer, "n_embd": n_embd, "n_ff": n_ff, "n_head": n_head, "n_head_kv": heads_kv,
            "head_dim_k": head_k, "head_dim_v": header.get(prefix + "attention.value_length") or head_k}


def _per_layer(value: Any, n_layer: int | None) -> list[int]:
    """A head count as one value per layer (the header gives one for all layers, or a list)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [int(v) for v in value]
    return [int(value)] * (n_layer or 0)


def _n_vocab(header: Header, prefix: str) -> int | None:
    n_vocab = header.get(prefix + "vocab_size") or header.length("tokenizer.ggml.tokens")
    if n_vocab:
        return n_vocab
    emb = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    return emb.shape[-1] if emb is not None and len(emb.shape) > 1 else None


def _file_type(header: Header) -> str | None:
    """"Q4_K_M", "F16", ...: `general.file_type`, else the type holding most of the bytes of the matrices."""
    from gguf import LlamaFileType

    raw = header.get("general.file_type")
    if raw is not None:
        try:
            return LlamaFileType(int(raw)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            return f"type {raw}"
    counts: Counter = Counter()
    for t in header.tensors:
        if len(t.shape) > 1:
            counts[t.type_name] += t.n_bytes
    return counts.most_common(1)[0][0] if counts else None


_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def _add_shards(info: ModelInfo, first: Path) -> None:
    """Add the size and parameters of shards 2..N of a gguf-split model (llama.cpp loads them from shard 1)."""
    m = _SHARD.match(first.name)
    if not m or int(m["no"]) != 1:
        return
    for no in range(2, info.split_count + 1):
        shard = first.with_name(f"{m['stem']}-{no:05d}-of-{info.split_count:05d}.gguf")
        if not shard.is_file():
            raise ModelError(f"{first}: shard {shard.name} of this split model is missing")
        info.n_params += sum(t.n_elements for t in _read_header(shard).tensors)
        info.file_size += shard.stat().st_size


def is_later_shard(path: Path) -> bool:
    """True for shards 2..N of a gguf-split model (listed under shard 1)."""
    m = _SHARD.match(Path(path).name)
    return bool(m) and int(m["no"]) > 1


def packaged_info(name: str, cache_dir: Path) -> ModelInfo:
    """A packaged model's header without joining it: the joined file in the cache when it is there, else part 1
    of the split packages (which holds the whole header), else the file in its package."""
    model = PACKAGED_CHAT_MODELS[name]
    if not isinstance(model, SplitGGUF):
        return read_gguf(packaged_file(model))
    joined = joined_path(model, cache_dir)
    if joined.is_file() and joined.stat().st_size == model.size:
        return read_gguf(joined)
    info = read_gguf(split_part_paths(model)[0], file_size=model.size)
    info.path = str(joined)
    return info


# --- can it run here? ------------------------------------------------------------------------------------

def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (what can be had without swapping), or None off Linux."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_model(path: Path, n_ctx: int, force: bool = False, available: int | None = None,
                info: ModelInfo | None = None) -> list[str]:
    """Refuse (ModelError, one line) a model llama.cpp cannot run here; return warnings for one it runs badly.

    Refused: an old GGML file, a GPTQ / AWQ / safetensors folder or file, a file that is not GGUF, and (unless
    `force`) a model whose estimated memory at `n_ctx` exceeds `available` bytes (default: MemAvailable now).
    Warned: no chat template (a base model: it continues text instead of answering), n_ctx beyond the trained
    context, and with `force` a model too large for the memory."""
    path = Path(path)
    if info is None:
        info = read_gguf(path)
    warnings = []
    problem = memory_problem(info, n_ctx, available)
    if problem:
        if not force:
            raise ModelError(f"{path.name}: {problem}; choose a smaller model or quantization, lower n_ctx, "
                             "or use --force to load it anyway")
        warnings.append(f"{path.name}: {problem}; loading anyway (--force): expect swapping, or the process being killed")
    return warnings + quality_warnings(info, n_ctx, path.name)


def memory_problem(info: ModelInfo, n_ctx: int, available: int | None = None) -> str | None:
    """Both numbers, when the estimated memory at `n_ctx` exceeds `available` (default: MemAvailable now)."""
    need = info.memory_bytes(n_ctx)
    have = available_memory() if available is None else available
    if have is None or need <= have:
        return None
    return (f"needs about {human_bytes(need)} of memory at n_ctx {n_ctx} (weights {human_bytes(info.file_size)} + "
            f"KV cache {human_bytes(info.kv_cache_bytes(n_ctx))} + compute and runtime "
            f"{human_bytes(info.compute_bytes(n_ctx) + RUNTIME_OVERHEAD)}) but only {human_bytes(have)} is available")


def quality_warnings(info: ModelInfo, n_ctx: int, name: str) -> list[str]:
    """What makes a model that runs answer badly: no chat template, a context longer than it was trained for."""
    warnings = []
    if not info.chat_template:
        warnings.append(f"{name}: no chat template in the file, so it is probably a base model, which continues text "
                        "instead of answering questions; prefer an instruct/chat version (-Instruct, -chat in the name)")
    if info.context_length and n_ctx > info.context_length:
        warnings.append(f"{name}: n_ctx {n_ctx} is longer than the model was trained for ({info.context_length}); "
                        "answers degrade past it")
    return warnings


# --- helpful messages -------------------------------------------------------------------------------------

def _folder_message(path: Path) -> str:
    config = _read_json(path / "config.json")
    quant = (config or {}).get("quantization_config") or _read_json(path / "quantize_config.json") or {}
    method = str(quant.get("quant_method") or ("gptq" if (path / "quantize_config.json").is_file() else "")).lower()
    name = _base_name(str((config or {}).get("_name_or_path") or path.name).rstrip("/").split("/")[-1])
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return f"{path}: a folder; give one of its GGUF files, e.g. {ggufs[0]}"
    if method in GPU_QUANT_METHODS or any(path.glob("*.safetensors")) or config is not None:
        kind = f"a {method.upper()} model" if method else "a transformers (safetensors) model"
        return (f"{path}: {kind} folder, for GPU runtimes (transformers, AutoGPTQ, ExLlama, vLLM), not llama.cpp, "
                f"which runs only GGUF files; {_gguf_hint(name)}")
    return f"{path}: a folder, not a GGUF model file"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _looks_like_safetensors(magic: bytes, path: Path) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'.
    if len(magic) < 8:
        return False
    n = int.from_bytes(magic, "little")
    if not 2 <= n < 100_000_000:
        return False
    with path.open("rb") as fh:
        fh.seek(8)
        return fh.read(1) == b"{"


def _base_name(name: str) -> str:
    """The model's name without file extension, format and quantization: 'llama-2-13b-chat.ggmlv3.q4_0.bin',
    'Llama-2-13B-chat-GPTQ' -> 'llama-2-13b-chat', 'Llama-2-13B-chat'."""
    stem = re.sub(r"\.(bin|gguf|safetensors|pt|pth)$", "", name, flags=re.I)
    stem = re.sub(r"[.-](ggml(v\d)?|gguf|gptq|awq|exl2|hf|fp16|f16|f32|bf16|(i?q\d[\w]*))$", "", stem, flags=re.I)
    stem = re.sub(r"[.-](ggml(v\d)?|gguf|gptq|awq|exl2)(?=$|[.-])", "", stem, flags=re.I)
    stem = re.sub(r"[.-](i?q\d(_[a-z0-9]+)*|f16|f32)$", "", stem, flags=re.I)
    return stem or name


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _gguf_hint(base: str) -> str:
    return (f'look for a GGUF version: search the Hugging Face hub for "{base} GGUF" (TheBloke\'s and bartowski\'s '
            f"-GGUF repositories cover most models), then `rag models pull REPO FILE.gguf`")
