"""Scale-out for real: a `chroma run` server and `python -m llama_cpp.server` processes with the small packaged
model, started on loopback by these tests on free ports, serve ingests and questions through the Python API and
through the `rag` CLI in a subprocess (RAG_CHROMA_URL / RAG_LLM_URL). Nothing is stubbed."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.api import RAG
from rag.config import Settings
from rag.models.packaged import ModelError
from rag.models.resolve import chat_model_path
from rag.storage.store import StoreError
from tests.conftest import CRAN_FACT, make_settings

BIN = Path(sys.executable).parent
CHAT_ALIAS = "smollm2-135m"
EMBED_ALIAS = "smol-embed"
CRAN = "CRAN is the Comprehensive R Archive Network, a network of servers that store identical copies of R packages.\n"
CRAN_DOC_FACT = "Comprehensive R Archive Network"  # what an answer to "What is CRAN?" from CRAN (above) says


def _chroma_exe() -> str | None:
    return shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")


def _llama_server_missing() -> str | None:
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'llama-cpp-python[server]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on 127.0.0.1, ready once `ready_path` answers 200; its output goes to a log file."""

    def __init__(self, cmd: list[str], port: int, ready_path: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._fh = log.open("wb")
        # Its own session: the test can end it and every thread it started, and a Ctrl-C here does not reach it.
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                self._fh.close()
                pytest.fail(f"{' '.join(cmd[:3])} exited with {self.proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{' '.join(cmd[:3])} did not answer {ready_path} within 180 s: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The whole process group this test started (a server under strace is two processes).
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._fh.close()


def start_chroma(folder: Path, log: Path, prefix: list[str] | None = None) -> Server:
    exe = _chroma_exe()
    if exe is None:
        pytest.skip("the `chroma` executable (chromadb) is not installed")
    port = _free_port()
    # Chroma 1.x's server is the Rust binary inside chromadb; it has no product telemetry (the strace test below
    # shows it connects nowhere). The variables are set anyway, for the older Python server that read them.
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "CHROMA_ANONYMIZED_TELEMETRY": "False"}
    return Server([*(prefix or []), exe, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                  port, "/api/v2/heartbeat", log, env)


def start_llama_server(tmp: Path, alias: str, *extra: str) -> Server:
    missing = _llama_server_missing()
    if missing:
        pytest.skip(missing)
    model = chat_model_path("smollm2-135m", tmp / "cache")
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", *extra]
    return Server(cmd, port, "/v1/models", tmp / f"{alias}.log")


@pytest.fixture(scope="module")
def chroma(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("chroma")
    server = start_chroma(tmp / "db", tmp / "chroma.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory) -> Iterator[Server]:
    # --interrupt_requests false: by default llama_cpp.server cuts a streaming answer short as soon as another
    # request arrives (a second user, or a token count), which would truncate answers silently.
    server = start_llama_server(tmp_path_factory.mktemp("chat"), CHAT_ALIAS, "--n_ctx", "2048", "--interrupt_requests", "false")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory) -> Iterator[Server]:
    server = start_llama_server(tmp_path_factory.mktemp("embed"), EMBED_ALIAS, "--n_ctx", "512", "--embedding", "true")
    yield server
    server.stop()


def served_settings(store: Path, chroma: Server, chat: Server | None = None, **overrides) -> Settings:
    extra = {"llm_url": chat.url + "/v1", "model": CHAT_ALIAS, "max_tokens": 64} if chat else {}
    return make_settings(store, chroma_host="127.0.0.1", chroma_port=chroma.port, ocr="never", **extra, **overrides)


def served_rag(store: Path, embeddings, chroma: Server, chat: Server | None = None, **overrides) -> RAG:
    return RAG(served_settings(store, chroma, chat, **overrides), embeddings=embeddings)  # the session's MiniLM


def server_collection(chroma: Server, name: str):
    """The collection as the Chroma server has it, through a client of its own."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma.port, settings=ChromaSettings(anonymized_telemetry=False))
    return client.get_collection(name)


@pytest.fixture
def small_docs(tmp_path, data_copy) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cran.txt").write_text(CRAN, encoding="utf-8")
    shutil.copy(data_copy / "pypdf-encryption-decryption.md", folder)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory, embeddings, data_copy, chroma, chat_server):
    """data/ ingested into the Chroma server (OCR off: it is not what these tests are about, and costs a
    minute of a shared CPU), answering with smollm on the llama_cpp.server."""
    rag = served_rag(tmp_path_factory.mktemp("served") / "store", embeddings, chroma, chat_server, collection="scaleout-data")
    report = rag.ingest(data_copy)
    assert report.ingested and not report.failed, report.failed
    return rag, report


# --- the Python API ---------------------------------------------------------------------------------------------

def test_ingest_and_ask_through_the_servers(served, chroma, data_copy):
    rag, report = served
    # Every chunk is on the server, none in a local Chroma store: the store folder holds the manifest only.
    on_server = server_collection(chroma, "scaleout-data")
    assert on_server.count() == report.chunks == sum(r.chunks for r in rag.files()) > 100
    assert on_server.configuration["hnsw"]["space"] == "cosine"
    assert not (rag.settings.store / "chroma.sqlite3").exists()
    assert (rag.settings.store / "manifest.sqlite3").is_file()

    answer = rag.ask("What is CRAN?")
    assert type(rag.llm).__name__ == "RemoteChatOpenAI"
    assert CRAN_FACT in answer.text and not answer.refused, answer.text  # the chat server's first answer
    assert answer.sources and all(Path(s.source).is_relative_to(data_copy) for s in answer.sources)
    assert "R-FAQ.pdf" in {Path(s.source).name for s in answer.sources}


def test_reingest_unchanged_changes_nothing_on_the_server(served, chroma, data_copy):
    rag, first = served
    again = rag.ingest(data_copy)
    assert again.ingested == [] and not again.failed
    assert sorted(again.unchanged) == sorted(first.ingested + first.skipped)
    assert server_collection(chroma, "scaleout-data").count() == first.chunks


def test_a_second_client_sees_the_same_data(served, embeddings, chroma, chat_server, tmp_path):
    rag, report = served
    # Another machine: same servers, its own (empty) store folder.
    other = served_rag(tmp_path / "other-store", embeddings, chroma, chat_server, collection="scaleout-data")
    assert other.store.count() == report.chunks
    assert other.files() == []  # the manifest is the ingesting machine's
    ids = {cid for rec in rag.files() for cid in rec.chunk_ids}
    hits = other.store.lexical().search("Comprehensive R Archive Network CRAN", 5)  # built from the server's chunks
    assert hits and all(cid in ids for cid, _ in hits)
    # The same question finds the same passages. (The words may differ: llama.cpp reuses the cached start of the
    # server's previous prompt, which can move a near-tie.)
    answer = other.ask("What is CRAN?")
    assert "CRAN" in answer.text and not answer.refused, answer.text
    assert [(s.source, s.page, s.text) for s in answer.context] == [(s.source, s.page, s.text) for s in rag.ask("What is CRAN?").context]


def test_delete_and_reset_are_seen_by_every_client(small_docs, embeddings, chroma, tmp_path):
    a = served_rag(tmp_path / "a", embeddings, chroma, collection="scaleout-life")
    b = served_rag(tmp_path / "b", embeddings, chroma, collection="scaleout-life")
    report = a.ingest(small_docs)
    assert len(report.ingested) == 2 and server_collection(chroma, "scaleout-life").count() == report.chunks
    assert b.store.count() == report.chunks
    cran = str(small_docs / "cran.txt")
    cran_ids = set(a.store.manifest.get(cran).chunk_ids)
    assert {cid for cid, _ in b.store.lexical().search("Comprehensive Archive Network", 3)} & cran_ids

    removed = a.delete(cran)
    assert removed == len(cran_ids) >= 1
    assert b.store.count() == report.chunks - removed
    # b's lexical index follows the revision kept with the collection on the server, not b's own manifest.
    assert not {cid for cid, _ in b.store.lexical().search("Comprehensive Archive Network", 3)} & cran_ids

    a.reset()
    assert b.store.count() == 0  # b's handle pointed at the old collection: it reopens the new one
    fresh = server_collection(chroma, "scaleout-life")
    assert fresh.count() == 0 and fresh.configuration["hnsw"]["space"] == "cosine"
    again = a.ingest(small_docs)
    assert len(again.ingested) == 2 and b.store.count() == again.chunks


def test_budget_fits_the_servers_context_with_its_own_tokenizer(served, embeddings, chroma, chat_server, tmp_path):
    # 12 passages of up to 200 MiniLM tokens do not fit smollm's 2048 tokens with the prompt and the answer:
    # without a budget counted in the server's tokens the server refuses the request.
    rag, _ = served
    wide = served_rag(tmp_path / "wide", embeddings, chroma, chat_server, collection="scaleout-data", k=12,
                      n_ctx=2048, min_score=-1.0)
    answer = wide.ask("What does the R FAQ say about packages, CRAN, mirrors and installing R?")
    assert answer.text  # the server took the request: the prompt fitted its context
    assert 0 < len(answer.context) < 12
    from rag.answer.llm import remote_token_counter

    count, how = remote_token_counter(wide.settings)
    assert how.endswith("/extras/tokenize")
    prompt = sum(count(s.text) for s in answer.context)
    assert prompt <= 2048 - 64


def test_remote_token_counts_are_the_models_own(chat_server, chroma, tmp_path, data_copy):
    from llama_cpp import Llama

    from rag.answer.llm import estimate_tokens, remote_token_counter

    settings = make_settings(tmp_path, llm_url=chat_server.url + "/v1", model=CHAT_ALIAS)
    count, how = remote_token_counter(settings)
    assert how == chat_server.url + "/extras/tokenize"
    vocab = Llama(model_path=str(chat_model_path("smollm2-135m", tmp_path)), vocab_only=True, verbose=False)
    english = (data_copy / "pypdf-encryption-decryption.md").read_text(encoding="utf-8")
    chinese = (data_copy / "zh" / "rust-installation.zh.md").read_text(encoding="utf-8")
    import pypdf

    pdf = "\n".join(page.extract_text() for page in pypdf.PdfReader(data_copy / "R-FAQ.pdf").pages[:10])
    for text in (english, chinese, pdf, "Hello"):
        true = len(vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        assert count(text) == true
        assert estimate_tokens(text) >= true  # the fallback errs high, for this tokenizer at least

    # A server without a tokenize endpoint (here: the Chroma server): the estimate.
    count, how = remote_token_counter(make_settings(tmp_path, llm_url=chroma.url + "/v1"))
    assert how == "estimate" and count(english) == estimate_tokens(english)


def test_max_tokens_reaches_the_server(chat_server, tmp_path):
    # ChatOpenAI sends `max_completion_tokens`, which llama_cpp.server ignores: without `max_tokens` in the body
    # it would write until its context is full.
    from rag.answer.llm import load_remote_chat_model, remote_token_counter

    settings = make_settings(tmp_path, llm_url=chat_server.url + "/v1", model=CHAT_ALIAS, max_tokens=5)
    message = load_remote_chat_model(settings).invoke("Write a long story about a dragon who learns to read.")
    assert message.response_metadata.get("finish_reason") == "length"
    count, _ = remote_token_counter(settings)
    assert 0 < count(str(message.content)) <= 5 + 1  # +1: the counter adds a BOS token


def test_remote_embeddings_endpoint(embed_server, small_docs, tmp_path):
    import numpy as np

    url = embed_server.url + "/v1"
    rag = RAG(make_settings(tmp_path / "store", embedding_url=url, embedding_model=EMBED_ALIAS, retrieval="dense", ocr="never"))
    report = rag.ingest(small_docs)
    assert len(report.ingested) == 2 and not report.failed
    identity = f"{EMBED_ALIAS} @ {url}"
    assert rag.store.collection.metadata["embedding_model"] == identity
    local = RAG(make_settings(tmp_path / "other"))
    assert rag.fingerprint != local.fingerprint

    # The stored vector of a chunk is the server's own embedding of it (its per-token vectors mean-pooled, then
    # normalised), computed here straight from the HTTP API.
    stored = rag.store.collection.get(limit=1, include=["documents", "embeddings"])
    text, vector = stored["documents"][0], np.asarray(stored["embeddings"][0])
    raw = httpx.post(url + "/embeddings", json={"input": [text], "model": EMBED_ALIAS}, timeout=120).json()["data"][0]["embedding"]
    expected = np.asarray(raw, dtype=np.float64)
    expected = expected.mean(axis=0) if expected.ndim == 2 else expected
    expected /= np.linalg.norm(expected)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4 and float(vector @ expected) > 0.9999

    # The query side goes through the same endpoint: a chunk's own text finds that chunk first.
    top = rag.retriever.invoke(text)[0]
    assert top.page_content == text and top.metadata["score"] > 0.999

    # Vectors of two models never mix: the local model is refused on this store.
    with pytest.raises(StoreError, match="built with embedding model 'smol-embed @ http"):
        RAG(make_settings(tmp_path / "store", embedding_model="all-MiniLM-L6-v2")).store
    # The default "auto" follows the store's record, which names the endpoint: without it, one line saying so.
    with pytest.raises(StoreError, match=f"embedded through the endpoint {url} \\(smol-embed\\): set embedding_url"):
        RAG(make_settings(tmp_path / "store")).embedding_model


# --- the CLI in a subprocess, configured by environment alone ---------------------------------------------------

def _cli_env(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    tiktoken_cache = tmp_path / "tiktoken-cache"
    tiktoken_cache.mkdir(parents=True, exist_ok=True)
    # tiktoken would download its tables into this folder: it must stay empty.
    return {**base, "TIKTOKEN_CACHE_DIR": str(tiktoken_cache), "RAG_STORE": str(tmp_path / "store"), **env}


def _rag(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    exe = BIN / "rag"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rag"]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_cli_ingest_and_ask_with_env_urls(chroma, chat_server, small_docs, tmp_path):
    env = _cli_env(tmp_path, RAG_CHROMA_URL=chroma.url, RAG_LLM_URL=chat_server.url + "/v1", RAG_MODEL=CHAT_ALIAS,
                   RAG_COLLECTION="scaleout-cli", RAG_MAX_TOKENS="64", RAG_OCR="never")
    out = _rag(["ingest", str(small_docs), "--quiet"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 ingested" in out.stdout + out.stderr
    chunks = server_collection(chroma, "scaleout-cli").count()
    assert chunks >= 2

    out = _rag(["ask", "What is CRAN?", "--json"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert CRAN_DOC_FACT in result["answer"] and not result["refused"], result["answer"]
    assert "cran.txt" in {Path(s["source"]).name for s in result["sources"]}
    assert "warning:" not in out.stderr  # the model name matches the server's

    out = _rag(["ingest", str(small_docs), "--quiet"], env, tmp_path)
    assert out.returncode == 0 and "0 ingested, 2 unchanged" in out.stdout + out.stderr
    assert server_collection(chroma, "scaleout-cli").count() == chunks
    assert list(Path(env["TIKTOKEN_CACHE_DIR"]).iterdir()) == []


def test_remote_path_loads_no_local_model_and_no_tiktoken(chroma, chat_server, small_docs, tmp_path):
    env = _cli_env(tmp_path, RAG_CHROMA_URL=chroma.url, RAG_LLM_URL=chat_server.url + "/v1", RAG_MODEL=CHAT_ALIAS,
                   RAG_COLLECTION="scaleout-nolocal", RAG_MAX_TOKENS="32", RAG_OCR="never")
    code = (
        "import sys, json\n"
        "from rag import RAG\n"
        "rag = RAG()\n"  # settings from the RAG_* environment alone
        f"rag.ingest({str(small_docs)!r})\n"
        "answer = rag.ask('What is CRAN?')\n"
        "import tiktoken.registry\n"
        "print(json.dumps({'answer': answer.text, 'llama_cpp': 'llama_cpp' in sys.modules,\n"
        "                  'encodings': list(tiktoken.registry.ENCODINGS)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert CRAN_DOC_FACT in result["answer"], result["answer"]
    assert result["llama_cpp"] is False  # llama.cpp is never imported: the model is the server's
    assert result["encodings"] == []  # tiktoken (imported by langchain-openai) never built an encoding
    assert list(Path(env["TIKTOKEN_CACHE_DIR"]).iterdir()) == []


def test_unreachable_servers_are_one_line_errors(chroma, small_docs, tmp_path):
    closed = _free_port()
    env = _cli_env(tmp_path, RAG_CHROMA_URL=f"127.0.0.1:{closed}")
    out = _rag(["ask", "What is CRAN?"], env, tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: cannot reach the Chroma server at http://127.0.0.1:{closed}: start it with "
                                  f"`chroma run --path DIR --port {closed}` or unset RAG_CHROMA_URL (or chroma_host)")

    # A store with chunks on a live Chroma server, but no chat server.
    env = _cli_env(tmp_path, RAG_CHROMA_URL=chroma.url, RAG_COLLECTION="scaleout-nollm", RAG_OCR="never",
                   RAG_LLM_URL=f"http://127.0.0.1:{closed}/v1")
    assert _rag(["ingest", str(small_docs), "--quiet"], env, tmp_path).returncode == 0
    out = _rag(["ask", "What is CRAN?"], env, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert f"cannot reach the chat model server at http://127.0.0.1:{closed}/v1" in out.stderr
    assert "python -m llama_cpp.server" in out.stderr and "RAG_LLM_URL" in out.stderr

    env = _cli_env(tmp_path / "emb", RAG_EMBEDDING_URL=f"http://127.0.0.1:{closed}/v1", RAG_OCR="never")
    out = _rag(["ingest", str(small_docs), "--quiet"], env, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith(f"error: cannot reach the embeddings server at http://127.0.0.1:{closed}/v1")


def test_a_chroma_server_that_stops_is_a_one_line_error(embeddings, small_docs, tmp_path):
    server = start_chroma(tmp_path / "db", tmp_path / "chroma.log")
    try:
        rag = served_rag(tmp_path / "store", embeddings, server, collection="scaleout-stop")
        assert rag.ingest(small_docs).chunks == rag.store.count() > 0
    finally:
        server.stop()
    with pytest.raises(StoreError, match=f"cannot reach the Chroma server at {server.url} \\(it stopped answering\\)"):
        rag.store.count()


def test_chat_server_errors_name_the_server(chat_server, tmp_path):
    # A model name the server does not serve is a warning for a one-model server (it answers with its model).
    rag = RAG(make_settings(tmp_path, llm_url=chat_server.url + "/v1", model="some-other-model"))
    assert rag.model_warnings and "serves 'smollm2-135m'" in rag.model_warnings[0]
    with pytest.raises(ModelError, match="runs on the server"):
        rag.model_path
    closed = RAG(make_settings(tmp_path, llm_url=f"http://127.0.0.1:{_free_port()}/v1"))
    with pytest.raises(ModelError, match="cannot reach the chat model server"):
        closed.llm

    # Errors at call time (the server went away after the check, or refused the request), sync and async.
    import asyncio

    from rag.answer.llm import load_remote_chat_model

    gone = load_remote_chat_model(closed.settings)
    with pytest.raises(ModelError, match=f"cannot reach the chat model server at {closed.settings.llm_url}: start it"):
        gone.invoke("Hello")
    with pytest.raises(ModelError, match="cannot reach the chat model server"):
        asyncio.run(gone.ainvoke("Hello"))
    # A prompt longer than the server's context (2048): streamed (as rag asks), llama_cpp.server answers 200 and
    # an empty stream, which must not pass for an empty answer; unstreamed, HTTP 400.
    llm = load_remote_chat_model(make_settings(tmp_path, llm_url=chat_server.url + "/v1", model=CHAT_ALIAS))
    with pytest.raises(ModelError, match="ended the answer before it began.*start it with a context of at least n_ctx"):
        llm.invoke("word " * 3000)
    with pytest.raises(ModelError, match=r"refused the request \(HTTP 400.*context"):
        llm.model_copy(update={"streaming": False}).invoke("word " * 3000)


def test_doctor_reports_the_remote_endpoints(chroma, chat_server, tmp_path):
    from rag import doctor

    settings = served_settings(tmp_path, chroma, chat_server)
    checks = {c.name: c for c in doctor.run(settings)}
    assert checks["store"].status == "ok" and chroma.url in checks["store"].detail
    assert checks["chat model"].status == "ok" and chat_server.url in checks["chat model"].detail
    closed = _free_port()
    settings = make_settings(tmp_path, chroma_host="127.0.0.1", chroma_port=closed, llm_url=f"http://127.0.0.1:{closed}/v1",
                             embedding_url=f"http://127.0.0.1:{closed}/v1")
    checks = {c.name: c for c in doctor.run(settings)}
    for name in ("store", "chat model", "embeddings"):
        assert checks[name].status == "fail" and f"127.0.0.1:{closed}" in checks[name].detail, checks[name]


def test_the_client_and_the_chroma_server_connect_only_to_loopback(chat_server, embeddings, small_docs, tmp_path):
    """The privacy promise with servers: under strace, the Chroma server connects nowhere at all, and `rag ask`
    connects only to the (loopback) servers it was given."""
    from tests.test_privacy import STRACE, outside_connections

    if STRACE is None:
        pytest.skip("strace not installed (apt-get install strace)")
    server_log = tmp_path / "chroma.strace"
    trace = [STRACE, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o"]
    server_trace = [STRACE, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,accept,accept4", "-o", str(server_log)]
    server = start_chroma(tmp_path / "db", tmp_path / "chroma.log", prefix=server_trace)
    try:
        served_rag(tmp_path / "store", embeddings, server, collection="scaleout-private").ingest(small_docs)
        env = _cli_env(tmp_path, RAG_CHROMA_URL=server.url, RAG_LLM_URL=chat_server.url + "/v1", RAG_MODEL=CHAT_ALIAS,
                       RAG_COLLECTION="scaleout-private", RAG_MAX_TOKENS="32")
        client_log = tmp_path / "ask.strace"
        exe = BIN / "rag"
        out = subprocess.run([*trace, str(client_log), str(exe), "ask", "What is CRAN?", "--json"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert CRAN_DOC_FACT in json.loads(out.stdout)["answer"]
    finally:
        server.stop()
    connects = [line for line in client_log.read_text().splitlines() if "connect(" in line and "AF_INET" in line]
    # The trace saw the HTTP connections to both servers, and nothing else.
    assert any(f"htons({server.port})" in line for line in connects), connects
    assert any(f"htons({chat_server.port})" in line for line in connects), connects
    assert outside_connections(client_log) == []
    assert "accept" in server_log.read_text()  # the server's trace saw it take the clients' connections
    assert outside_connections(server_log) == []
