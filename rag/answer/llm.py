"""The chat model: a GGUF run in-process by llama.cpp (through LangChain's ChatLlamaCpp), with the
model's own chat template; or, when `llm_url` is set, a model on an OpenAI-compatible server (through
LangChain's ChatOpenAI), with no local model loaded."""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import PrivateAttr

from rag.config import Settings
from rag.models.packaged import ModelError, physical_cores


def _chat_llama_cpp_class() -> type:
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; our users need not see it.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models import ChatLlamaCpp

    class SerializedChatLlamaCpp(ChatLlamaCpp):
        """ChatLlamaCpp whose calls take turns: one llama.cpp context is not thread-safe, and LangChain's
        batch and async forms call it from several threads (two at once crash the process)."""

        _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return super()._generate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with self._lock:
                yield from super()._stream(*args, **kwargs)

    return SerializedChatLlamaCpp


def load_chat_model(model_path: Path, settings: Settings) -> BaseChatModel:
    """Load a GGUF once; the returned LangChain chat model streams tokens and is safe to share across threads."""
    try:
        return _chat_llama_cpp_class()(
            model_path=str(model_path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads or physical_cores(),
            n_batch=settings.n_batch,  # ChatLlamaCpp's default of 8 makes prompt processing several times slower
            n_gpu_layers=settings.n_gpu_layers,
            # ChatLlamaCpp passes 10000 by default, overriding the GGUF's own RoPE settings (Qwen2.5 uses
            # 1e6); 0 makes llama.cpp read them from the model file.
            rope_freq_base=0.0,
            rope_freq_scale=0.0,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            repeat_penalty=1.05,
            streaming=True,
            verbose=False,
        )
    except ValueError as exc:
        raise ModelError(f"{model_path}: llama.cpp could not load the model ({str(exc).splitlines()[-1][:200]})") from None


# --- a chat model on an OpenAI-compatible server (llama_cpp.server, llama-server, vLLM, Ollama) ---------------

# Connect quickly, but let a slow CPU server take its time over a long answer.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 600.0


def _start_hint(url: str) -> str:
    from urllib.parse import urlparse

    port = urlparse(url).port or 8000
    return (f"start it with `python -m llama_cpp.server --model FILE.gguf --host 127.0.0.1 --port {port}` "
            "(or any OpenAI-compatible server) or unset llm_url (RAG_LLM_URL)")


def server_root(url: str) -> str:
    """`http://host:8080/v1` -> `http://host:8080`: the llama.cpp servers' extra endpoints live at the root."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def probe_openai_server(url: str, api_key: str | None, what: str, hint: str) -> list[str]:
    """GET `url`/models: the model names the server serves. ModelError (one line, naming the URL and `hint`)
    when it cannot be reached, refuses the key, or is not an OpenAI-compatible server."""
    import httpx

    try:
        resp = httpx.get(url.rstrip("/") + "/models", headers=_headers(api_key), timeout=CONNECT_TIMEOUT)
    except httpx.HTTPError as exc:
        raise ModelError(f"cannot reach the {what} server at {url} ({type(exc).__name__}): {hint}") from None
    if resp.status_code in (401, 403):
        raise ModelError(f"the {what} server at {url} refused the API key (HTTP {resp.status_code}); set the right key")
    if resp.status_code != 200:
        raise ModelError(f"the {what} server at {url} answered HTTP {resp.status_code} to GET /models: "
                         "expected an OpenAI-compatible base URL such as http://host:port/v1")
    try:
        return [str(m.get("id")) for m in resp.json().get("data", [])]
    except (ValueError, AttributeError):
        raise ModelError(f"the {what} server at {url} did not answer GET /models with an OpenAI model list") from None


def check_remote_chat(settings: Settings) -> list[str]:
    """Check that the chat server answers; warnings (not errors) for a model name it does not list.

    Servers that serve one model (llama_cpp.server, llama-server) answer with it whatever name is sent; servers
    that serve several (vLLM, Ollama) refuse an unknown name, so then it is an error."""
    assert settings.llm_url
    served = probe_openai_server(settings.llm_url, settings.llm_api_key, "chat model", _start_hint(settings.llm_url))
    if not served or settings.model in served:
        return []
    if len(served) == 1:
        return [f"the chat server at {settings.llm_url} serves {served[0]!r}; asked for {settings.model!r} "
                f"(set model / RAG_MODEL to {served[0]!r} to silence this)"]
    raise ModelError(f"the chat server at {settings.llm_url} does not serve {settings.model!r}; it serves "
                     f"{', '.join(repr(s) for s in served)}: set model (RAG_MODEL or --model) to one of them")


def _remote_error(exc: Exception, url: str) -> Exception:
    """An openai client exception as a one-line ModelError; anything else unchanged."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ModelError(f"the chat model server at {url} did not answer within {READ_TIMEOUT:.0f} s")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(f"cannot reach the chat model server at {url}: {_start_hint(url)}")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelError(f"the chat model server at {url} refused the API key; set llm_api_key (RAG_LLM_API_KEY)")
    if isinstance(exc, openai.APIStatusError):
        detail = " ".join(str(getattr(exc, "message", exc)).split())[:300]
        hint = ""
        if "context" in detail.lower() or "too long" in detail.lower() or "exceed" in detail.lower():
            hint = "; the server's context may be smaller than n_ctx: start it with a context of at least n_ctx, or lower n_ctx"
        return ModelError(f"the chat model server at {url} refused the request (HTTP {exc.status_code}: {detail}){hint}")
    return exc


def _empty_stream(url: str) -> ModelError:
    # A streamed request the server cannot serve (llama_cpp.server: a prompt longer than its context) comes back
    # as "200 OK" and a stream without a single chunk; every real answer starts with at least one.
    return ModelError(f"the chat model server at {url} ended the answer before it began; the prompt is probably "
                      "longer than the server's context: start it with a context of at least n_ctx, or lower n_ctx")


def _remote_chat_class() -> type:
    from langchain_openai import ChatOpenAI

    class RemoteChatOpenAI(ChatOpenAI):
        """ChatOpenAI whose server errors are one-line ModelErrors naming the URL (the CLI prints those
        without a traceback)."""

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super()._generate(*args, **kwargs)
            except Exception as exc:
                raise _remote_error(exc, str(self.openai_api_base)) from None

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            empty = True
            try:
                for chunk in super()._stream(*args, **kwargs):
                    empty = False
                    yield chunk
            except Exception as exc:
                raise _remote_error(exc, str(self.openai_api_base)) from None
            if empty:
                raise _empty_stream(str(self.openai_api_base))

        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._agenerate(*args, **kwargs)
            except Exception as exc:
                raise _remote_error(exc, str(self.openai_api_base)) from None

        async def _astream(self, *args: Any, **kwargs: Any):
            empty = True
            try:
                async for chunk in super()._astream(*args, **kwargs):
                    empty = False
                    yield chunk
            except Exception as exc:
                raise _remote_error(exc, str(self.openai_api_base)) from None
            if empty:
                raise _empty_stream(str(self.openai_api_base))

    return RemoteChatOpenAI


def load_remote_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model on the OpenAI-compatible server at `settings.llm_url`; `settings.model` is the name sent.

    Nothing here counts tokens with tiktoken (which would download its tables from the internet): the context
    budget uses `remote_token_counter`."""
    import httpx

    assert settings.llm_url
    return _remote_chat_class()(
        base_url=settings.llm_url,
        # Local servers want no key, but the openai client insists on one.
        api_key=settings.llm_api_key or "not-needed",
        model=settings.model,
        temperature=settings.temperature,
        seed=settings.seed,
        streaming=True,
        # ChatOpenAI sends its max_tokens as `max_completion_tokens`, which llama_cpp.server ignores (it would
        # generate until the context is full); every OpenAI-compatible server reads `max_tokens`.
        extra_body={"max_tokens": settings.max_tokens},
        stream_usage=False,  # `stream_options` is not understood by every server
        use_responses_api=False,  # the /responses API is OpenAI's own; local servers speak /chat/completions
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        max_retries=1,
    )


def estimate_tokens(text: str) -> int:
    """A token count that errs high, for a remote model whose tokenizer is out of reach: 2.5 ASCII characters a
    token, 0.75 token per byte of any other character (2.25 per Chinese character). Measured on data/: PDF text
    runs at 2.8 (SmolLM2) to 3.0 (Qwen2.5) characters a token, and SmolLM2's English-only vocabulary spends 0.57
    token per byte of Chinese (Qwen2.5: 0.25)."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    other_bytes = len(text.encode("utf-8")) - ascii_chars
    return (2 * ascii_chars + 4) // 5 + (3 * other_bytes + 3) // 4


def remote_token_counter(settings: Settings) -> tuple[Callable[[str], int], str]:
    """Count tokens with the chat server's own tokenizer when it exposes one (llama_cpp.server's
    /extras/tokenize, llama-server's /tokenize), else with `estimate_tokens`. Returns (counter, how)."""
    import httpx

    assert settings.llm_url
    root = server_root(settings.llm_url)
    headers = _headers(settings.llm_api_key)
    endpoints = [
        (root + "/extras/tokenize", lambda text: {"input": text, "model": settings.model}),
        (root + "/tokenize", lambda text: {"content": text}),
    ]
    client = httpx.Client(headers=headers, timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT))
    for url, body in endpoints:
        try:
            resp = client.post(url, json=body("Hello world"))
            ok = resp.status_code == 200 and isinstance(resp.json().get("tokens"), list)
        except (httpx.HTTPError, ValueError, AttributeError):
            ok = False
        if not ok:
            continue

        @functools.lru_cache(maxsize=512)  # the system prompt and unchanged passages are counted again and again
        def count(text: str, url: str = url, body: Callable[[str], dict] = body) -> int:
            try:
                resp = client.post(url, json=body(text))
                resp.raise_for_status()
                return len(resp.json()["tokens"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return estimate_tokens(text)  # a busy or restarted server must not fail the question

        return count, url
    client.close()
    return estimate_tokens, "estimate"
