"""`Settings`: every knob in one object, layered defaults < rag.toml < environment `RAG_*` < CLI flags.

This is the only module that reads environment variables; everything else receives a `Settings`.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "RAG_"
CONFIG_FILE_NAME = "rag.toml"


class ConfigError(Exception):
    """A configuration file or value that cannot be used."""


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def models_folder(cache_dir: Path, models_dir: Path | None = None) -> Path:
    """The folder of GGUF chat models: `models_dir` when set, else <cache_dir>/models, where the packaged model
    is joined whatever `models_dir` says."""
    return Path(models_dir or Path(cache_dir) / "models").expanduser()


class Settings(BaseModel):
    """All settings of a `RAG` instance. Every field documents itself (see `rag config`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- store ---
    store: Path = Field(Path("vectorstore"), description="Folder of the embedded Chroma store and its manifest.")
    collection: str = Field("documents", description="Chroma collection name.")
    chroma_host: str | None = Field(None, description="Chroma server host; when set, the store folder holds only the manifest.")
    chroma_port: int = Field(8000, description="Chroma server port.")

    # --- models ---
    cache_dir: Path = Field(default_factory=lambda: _default_cache_dir(os.environ), description="Where the packaged chat model is joined and cached.")
    embedding_model: str = Field("auto", description="'auto' (a new store takes all-MiniLM-L6-v2, or multilingual-e5-small when the files of its first ingest hold Chinese text; then the model the store records), 'all-MiniLM-L6-v2' (packaged; English), 'multilingual-e5-small' (packaged, 4-bit; Chinese and English, cross-lingual; embeds ~5x slower) or a sentence-transformers model folder. A store keeps the model it was built with: another one needs `rag reset` and a new ingest.")
    embedding_batch_size: int = Field(32, ge=1, description="Chunks per embedding batch.")
    embedding_backend: Literal["auto", "torch", "bf16"] = Field("auto", description="How the local embedding model runs: torch (float32), bf16 (the model run by OpenVINO in bfloat16; fast on CPUs with AMX or AVX512-BF16), or auto (bf16 where the CPU does it in hardware).")
    model: str = Field("qwen2.5-coder-1.5b", description="Chat model: 'qwen2.5-coder-1.5b' (packaged default), 'smollm2-135m' (packaged, tiny) or a GGUF path.")
    models_dir: Path | None = Field(None, description="Folder of downloaded GGUF chat models (rag models pull/list/use); default <cache_dir>/models.")
    memory_check: bool = Field(True, description="Refuse a chat model whose estimated memory (weights + KV cache + compute) exceeds the available memory; --force turns it off.")
    n_ctx: int = Field(4096, ge=256, description="Context window of the chat model, in tokens.")
    n_threads: int | None = Field(None, description="llama.cpp threads (default: the number of physical cores).")
    n_batch: int = Field(512, ge=1, description="Prompt tokens llama.cpp processes per step (larger: faster prompts, more memory).")
    n_gpu_layers: int = Field(0, description="Layers to offload to a GPU (needs a GPU build of llama-cpp-python).")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0: always the most likely token, for answers that stick to the passages and repeat).")
    max_tokens: int = Field(512, ge=1, description="Longest answer, in tokens.")
    seed: int = Field(42, description="Sampling seed, so that answers repeat.")
    llm_url: str | None = Field(None, description="Base URL of an OpenAI-compatible chat server (llama.cpp server, vLLM, Ollama), e.g. http://127.0.0.1:8080/v1; when set, no local model is loaded and `model` is the name sent to it.")
    llm_api_key: str | None = Field(None, description="API key for llm_url, if the server wants one.")
    embedding_url: str | None = Field(None, description="Base URL of an OpenAI-compatible embeddings endpoint, instead of the local embedding model.")
    embedding_api_key: str | None = Field(None, description="API key for embedding_url, if the server wants one.")

    # --- splitting ---
    chunk_size: int = Field(200, ge=16, description="Chunk length in embedding-model tokens (MiniLM reads at most 256).")
    chunk_overlap: int = Field(30, ge=0, description="Overlap between chunks, in embedding-model tokens.")

    # --- retrieval and answering ---
    k: int = Field(4, ge=1, description="Chunks retrieved per question.")
    min_support: float = Field(0.5, ge=0.0, le=1.0, description="The support check: an answer whose words (weighted by rarity) are less than this share found in the passages the model was shown counts as a refusal (refused_by 'support'); 0 turns the check off.")
    answer_style: Literal["auto", "quote", "brief"] = Field("auto", description="The answer prompt: quote (the answer in one short sentence with the passage's words; fewer needless refusals), brief (the first wording), or auto (the packaged model's own: brief for smollm2-135m, quote for the rest).")
    translate_questions: Literal["auto", "on", "off"] = Field("auto", description="Cross-lingual questions (English, Chinese): when the store holds files in a language other than the question's, the chat model translates the question and both are searched (one short generation before retrieval); off searches the question as typed; auto is on, except for smollm2-135m (too small to translate).")
    focus_share: float = Field(1.0, gt=0.0, le=1.0, description="Shorter prompts: of each passage, keep the sentences that bear on the question (with a neighbour each) up to this share of its length; 1 gives the model whole passages.")
    retrieval: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="hybrid (BM25 fused with dense vectors), dense or bm25.")
    min_score: float = Field(0.3, description="Below this relevance a chunk is not used as context, and with none left the answer is a refusal. Relevance: cosine similarity (multilingual-e5-small's rescaled, its cosine 0.81 counting as 0.3); for Chinese questions over an all-MiniLM-L6-v2 store, which cannot read Chinese, the IDF-weighted share of the question's words in the chunk.")
    password: str | None = Field(None, description="Password for encrypted PDFs.")
    mmr: bool = Field(False, description="Diversify the retrieved chunks with maximal marginal relevance.")
    ocr: Literal["auto", "always", "never"] = Field("auto", description="OCR of PDF pages: auto (pages without a usable text layer), always, never.")
    pdf_tables: bool = Field(True, description="Ruled PDF tables as Markdown tables (pdfplumber; PDF reading takes 1.7-2.2x as long); false reads plain text. A change re-reads the files on the next ingest.")
    ray_address: str | None = Field(None, description="rag ingest: read and embed on the Ray cluster at this address (host:port of its head, or 'auto': the cluster this machine belongs to); needs pip install 'rag[ray]'. Unset: ingest on this machine.")

    # --- serving ---
    api_key: str | None = Field(None, description="rag serve: when set, every endpoint but /health needs it (Authorization: Bearer KEY).")
    upload_dir: Path | None = Field(None, description="rag serve: where uploaded files are written (default <store>/uploads); nothing is written outside it.")
    max_upload_mb: int = Field(50, ge=1, description="rag serve: largest accepted upload, in MB.")
    keep_alive: float = Field(300, ge=0, description="rag ask/chat: seconds a background server keeps the model loaded after its last answer, so the next question skips the loading (0: never start one; --no-daemon for one command).")

    @classmethod
    def load(
        cls,
        config_file: Path | str | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from the layers: defaults < config file < `RAG_*` environment < `overrides`.

        `config_file` defaults to `$RAG_CONFIG` or `./rag.toml` when it exists. `overrides` (CLI flags) whose
        value is None are ignored, so unset flags do not hide lower layers.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = Path(config_file) if config_file else Path(env.get("RAG_CONFIG", CONFIG_FILE_NAME))
        if config_file or path.exists():
            values.update(_read_toml(path))
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        chroma_url = env.get("RAG_CHROMA_URL")
        if chroma_url:
            values.update(_parse_chroma_url(chroma_url))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        values.setdefault("cache_dir", _default_cache_dir(env))
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"setting {where!r}: {first['msg']}") from None

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, current value, description) for every setting."""
        return [(n, getattr(self, n), f.description or "") for n, f in type(self).model_fields.items()]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    # Accept both a flat file and one with a [rag] table; a [store] table may name the Chroma server.
    data = dict(data.get("rag", data))
    table = data.pop("store", None)
    if isinstance(table, dict):
        renames = {"path": "store", "host": "chroma_host", "port": "chroma_port", "collection": "collection"}
        unknown = set(table) - set(renames)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [store]: {', '.join(sorted(unknown))} (known: {', '.join(renames)})")
        data.update({renames[k]: v for k, v in table.items()})
    elif table is not None:
        data["store"] = table
    return data


def _parse_chroma_url(url: str) -> dict[str, Any]:
    from urllib.parse import urlparse

    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise ConfigError(f"RAG_CHROMA_URL={url!r}: expected host:port or http://host:port")
    return {"chroma_host": parsed.hostname, "chroma_port": parsed.port or 8000}


def write_setting(path: Path, key: str, value: str | int | float | bool) -> None:
    """Set `key = value` in a TOML settings file (created when missing), keeping the rest as the user wrote it:
    comments, order, layout. The key goes into the [rag] table when the file has one (Settings.load reads
    both layouts), else among the top-level keys, before any table."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    path = Path(path)
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except ParseError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = doc["rag"] if isinstance(doc.get("rag"), dict) else doc
    table[key] = value
    _replace_file(path, tomlkit.dumps(doc))


def _replace_file(path: Path, text: str) -> None:
    # Written beside it and renamed: an interrupted write never leaves a half settings file, and the
    # file keeps its permissions (it may hold api keys).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
