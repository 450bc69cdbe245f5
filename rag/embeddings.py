"""A LangChain `Embeddings` over a local sentence-transformers model (CPU, normalised vectors)."""

from __future__ import annotations

from pathlib import Path

from langchain_core.embeddings import Embeddings


class LocalEmbeddings(Embeddings):
    """Embeds with a sentence-transformers model loaded from a local folder; never touches a hub.

    Vectors are L2-normalised, so cosine similarity is a dot product and Chroma's cosine distance is
    `1 - similarity`.
    """

    def __init__(self, model_dir: Path, name: str, batch_size: int = 32, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar on every load
        self.name = name
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.max_tokens = int(self.model.max_seq_length) - 2  # [CLS] and [SEP] take two of the window
        self.dimension = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
