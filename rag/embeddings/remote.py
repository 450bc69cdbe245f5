"""`RemoteEmbeddings`: a LangChain `Embeddings` over an OpenAI-compatible `/embeddings` endpoint (used when
`embedding_url` is set)."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from rag.embeddings.identity import embedding_identity

__all__ = ["RemoteEmbeddings", "embedding_identity"]


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
