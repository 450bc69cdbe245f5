"""`LocalEmbeddings`: a LangChain `Embeddings` over a sentence-transformers model in a local folder (CPU by
default, normalised vectors), run by torch in float32 ("torch") or by OpenVINO in bfloat16 ("bf16", bf16.py)."""

from __future__ import annotations

from pathlib import Path

from langchain_core.embeddings import Embeddings

from rag.embeddings import bf16 as fast

BACKENDS = ("auto", "torch", "bf16")


class EmbeddingError(ValueError):
    """An embedding backend that does not exist or cannot run here."""


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend `backend` stands for on this machine: "auto" is "bf16" on a CPU that does bfloat16 in hardware
    when OpenVINO is installed, else "torch"."""
    if backend not in BACKENDS:
        raise EmbeddingError(f"embedding backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "bf16" if device == "cpu" and fast.native_bf16_available() and fast.openvino_installed() else "torch"
    if backend == "bf16" and device != "cpu":
        raise EmbeddingError(f"embedding backend 'bf16' is for the CPU, not device {device!r}")
    if backend == "bf16" and not fast.openvino_installed():
        raise EmbeddingError(f"embedding backend 'bf16' runs on OpenVINO: pip install {fast.OPENVINO_PIN}")
    return backend


class LocalEmbeddings(Embeddings):
    """Embeds with a sentence-transformers model loaded from a local folder; never touches a hub.

    Vectors are L2-normalised, so cosine similarity is a dot product and Chroma's cosine distance is
    `1 - similarity`. `backend` is the one that runs (after `resolve_backend`); "bf16" keeps the converted
    model in `cache_dir` (without one it converts in every process, some seconds).
    """

    def __init__(self, model_dir: Path, name: str, batch_size: int = 32, device: str = "cpu", backend: str = "auto",
                 cache_dir: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        self.backend = resolve_backend(backend, device)
        hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar on every load
        self.name = name
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.max_tokens = int(self.model.max_seq_length) - 2  # [CLS] and [SEP] take two of the window
        self.dimension = int(self.model.get_embedding_dimension())
        self.transformer = None
        if self.backend == "bf16":
            self.transformer = fast.OpenVINOTransformer(self.model, self.model_dir, cache_dir, fast.native_bf16_available())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if self.backend == "bf16":
            return fast.encode_by_tokens(self.model, texts, self.batch_size, self.transformer).tolist()
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
