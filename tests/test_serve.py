"""`rag serve` for real: uvicorn on loopback over a real store and the small llama.cpp model, driven by the official
`openai` client and plain HTTP: answers and sources, streaming, history, queueing, disconnects, API keys,
uploads and ingest paths (limits, traversal, symlinks), and the `rag serve` command itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from rag.api import RAG
from rag.server.app import create_app, serve_in_thread
from tests.conftest import CRAN_FACT, REPO, make_settings

LONG_QUESTION = "Write a long essay about R."  # the small model fills its whole token budget on this one


@contextlib.contextmanager
def running(rag, **settings_update):
    """The app over `rag` on 127.0.0.1:<free port>; yields (base url, app)."""
    docs = settings_update.pop("docs", ())
    settings = rag.settings.model_copy(update=settings_update)
    app = create_app(rag, settings, docs=docs)
    with serve_in_thread(app) as url:
        yield url, app


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def server(small_rag, data_copy):
    with running(small_rag, docs=[data_copy]) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def long_rag(small_rag):
    """The same store, with room for a 256-token answer (its own small model instance)."""
    return RAG(small_rag.settings.model_copy(update={"max_tokens": 256}), embeddings=small_rag.embeddings,
               store=small_rag.store)


@pytest.fixture()
def fresh(tmp_path, small_rag, data_copy):
    """A server over an empty store of its own (same loaded models), uploads limited to 1 MB."""
    rag = RAG(make_settings(tmp_path / "store", model="smollm2-135m", max_tokens=64, max_upload_mb=1),
              embeddings=small_rag.embeddings, llm=small_rag.llm)
    docs = tmp_path / "docs"
    docs.mkdir()
    with running(rag, docs=[docs]) as (url, app):
        yield url, app, rag, docs


@contextlib.contextmanager
def model_held(app):
    """Take the server's model queue as if a long answer were being generated, so other requests must wait."""
    loop = app.state.loop
    asyncio.run_coroutine_threadsafe(app.state.queue.lock.acquire(), loop).result(timeout=30)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(app.state.queue.lock.release)


def wait_for(predicate, what: str, tries: int = 3000) -> None:
    """Poll a condition of the server (not a clock): at most `tries` x 10 ms."""
    event = threading.Event()
    for _ in range(tries):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"] and body["error"]["type"], body
    assert "Traceback" not in resp.text and "\n" not in body["error"]["message"]
    return body["error"]


def raw_upload(url: str, name: bytes, content: bytes) -> httpx.Response:
    """A multipart body written by hand, so the file name reaches the server byte for byte."""
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + content + b"\r\n--b--\r\n")
    return httpx.post(f"{url}/api/ingest", content=body, headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60)


def upload(url: str, name: str, content: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/api/ingest", files={"files": (name, content, "text/plain")}, headers=headers, timeout=300)


# --- the OpenAI-compatible API --------------------------------------------------------------------------------
def test_openai_client_non_streaming(server, data_copy):
    url, _ = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["smollm2-135m"]
    resp = c.chat.completions.create(model="anything", messages=[{"role": "user", "content": "What is CRAN?"}])
    assert resp.object == "chat.completion" and resp.model == "smollm2-135m"
    assert resp.choices[0].message.role == "assistant"
    assert "CRAN" in resp.choices[0].message.content  # (the fact itself: a fresh server, test_rag_serve_command)
    assert resp.choices[0].finish_reason in ("stop", "length")
    sources = resp.model_extra["sources"]
    assert sources, "an answer about CRAN comes with sources"
    for s in sources:
        assert Path(s["source"]).parent == data_copy or data_copy in Path(s["source"]).parents
        assert isinstance(s["n"], int) and s["n"] >= 1 and s["text"].strip() and isinstance(s["score"], float)
    assert any(Path(s["source"]).name == "R-FAQ.pdf" and s["page"] for s in sources)


def test_openai_client_streaming_matches_non_streaming(server, small_rag):
    url, _ = server
    c = client(url)
    messages = [{"role": "user", "content": "What is CRAN?"}]
    chunks = list(c.chat.completions.create(model="rag", messages=messages, stream=True))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    pieces = [ch.choices[0].delta.content or "" for ch in chunks]
    assert sum(bool(p) for p in pieces) > 3, "the answer arrives in many pieces"
    final = chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.model_extra["sources"] and all("sources" not in ch.model_extra for ch in chunks[:-1])
    whole = c.chat.completions.create(model="rag", messages=messages)
    assert "".join(pieces).strip() == whole.choices[0].message.content
    assert final.model_extra["sources"] == whole.model_extra["sources"]
    # And the same as asking in process: the server adds nothing and loses nothing.
    assert whole.choices[0].message.content == small_rag.ask("What is CRAN?").text


def test_earlier_messages_are_the_history(server, small_rag):
    url, _ = server
    history = [("human", "What is CRAN?"), ("ai", "CRAN is the Comprehensive R Archive Network [1].")]
    messages = [{"role": "system", "content": "ignored: the server has its own prompts"},
                {"role": "user", "content": history[0][1]}, {"role": "assistant", "content": history[1][1]},
                {"role": "user", "content": [{"type": "text", "text": "Where is its main site?"}]}]
    resp = client(url).chat.completions.create(model="rag", messages=messages)
    expected = small_rag.ask("Where is its main site?", history)
    assert resp.choices[0].message.content == expected.text
    assert expected.standalone_question != "Where is its main site?"  # the history really was used (condensed)


def test_concurrent_requests_each_get_their_whole_answer(server, small_rag):
    url, app = server
    questions = ["What is CRAN?", "How do I decrypt a PDF with pypdf?", "Who originally wrote R?"]
    alone = {q: small_rag.ask(q).text for q in questions}
    before = len(app.state.queue.log)
    c = client(url)

    def ask(q: str) -> str:
        return c.chat.completions.create(model="rag", messages=[{"role": "user", "content": q}]).choices[0].message.content

    with ThreadPoolExecutor(len(questions)) as pool:
        answers = dict(zip(questions, pool.map(ask, questions)))
    assert answers == alone
    records = list(app.state.queue.log)[before:]
    assert len(records) == 3 and all(r["finish"] in ("stop", "length") for r in records)


def test_requests_queue_behind_the_model(server):
    """While the model is busy, a request waits in the queue (visible on /health) and then gets its answer."""
    url, app = server
    with ThreadPoolExecutor(1) as pool:
        with model_held(app):
            future = pool.submit(client(url).chat.completions.create, model="rag",
                                 messages=[{"role": "user", "content": "What is CRAN?"}])
            wait_for(lambda: httpx.get(f"{url}/health").json()["queued"] == 1, "the request to queue")
            assert not future.done()
        assert "CRAN" in future.result(timeout=300).choices[0].message.content
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "busy": False, "queued": 0}


def test_a_disconnected_stream_stops_generating(long_rag):
    """A client that leaves mid-answer frees the model at once: its generation stops at the next token."""
    with running(long_rag) as (url, app):
        c = client(url)
        log = app.state.queue.log
        full = c.chat.completions.create(model="rag", messages=[{"role": "user", "content": LONG_QUESTION}])
        assert log[-1]["tokens"] == 256 and full.choices[0].finish_reason == "length"

        stream = c.chat.completions.create(model="rag", messages=[{"role": "user", "content": LONG_QUESTION}], stream=True)
        got = 0
        for chunk in stream:
            got += bool(chunk.choices[0].delta.content)
            if got == 2:
                break
        stream.close()  # the client goes away after two pieces
        # The model is freed for the next request, which gets its whole answer (it ends by itself, well
        # within the 256 tokens)...
        after = c.chat.completions.create(model="rag", messages=[{"role": "user", "content": "What is CRAN?"}])
        assert after.choices[0].finish_reason == "stop" and log[-1]["finish"] == "stop"
        assert "CRAN" in after.choices[0].message.content
        assert {Path(s["source"]).name for s in after.model_extra["sources"]} == {"R-FAQ.pdf"}
        # ...because the abandoned generation stopped long before its 256 tokens.
        cut = log[-2]
        assert cut["finish"] == "disconnected" and 2 <= cut["tokens"] < 128, cut


def test_a_queued_request_whose_client_leaves_never_runs(server):
    url, app = server
    log = app.state.queue.log
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "rag", "messages": [{"role": "user", "content": "What is CRAN?"}]}).encode()
    with model_held(app):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: app.state.queue.waiting == 1, "the request to queue")
        record = log[-1]
        sock.close()
        wait_for(lambda: app.state.queue.waiting == 0, "the request to leave the queue")
    assert record == {**record, "started": False, "tokens": 0, "finish": "disconnected"}
    assert httpx.get(f"{url}/health").json()["busy"] is False


def test_bad_chat_requests_get_clean_errors(server):
    url, _ = server
    post = lambda body: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)  # noqa: E731
    assert_error(post({"messages": []}), 400)
    assert_error(post({"messages": [{"role": "assistant", "content": "hi"}]}), 400)
    assert_error(post({"messages": [{"role": "user", "content": "  "}]}), 400)
    assert_error(post({"nothing": 1}), 400)
    assert_error(httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_error(httpx.get(f"{url}/v1/nothing"), 404)


# --- API key ---------------------------------------------------------------------------------------------------
def test_api_key_guards_every_endpoint_but_health(small_rag, data_copy):
    with running(small_rag, api_key="s3cret", docs=[data_copy]) as (url, _):
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/api/sources"), ("POST", "/api/ingest")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                err = assert_error(httpx.request(method, url + path, headers=headers, json={}), 401)
                assert err["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").chat.completions.create(model="rag", messages=[{"role": "user", "content": "What is CRAN?"}])
        good = client(url, "s3cret")
        assert good.models.list().data[0].id == "smollm2-135m"
        assert httpx.get(f"{url}/api/sources", headers={"Authorization": "Bearer s3cret"}).json()["data"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.get(f"{url}/").status_code == 200  # the page holds no data; it asks for the key


# --- ingest: uploads and paths ---------------------------------------------------------------------------------
def test_ingest_while_serving_and_answers_see_new_documents(fresh):
    url, app, rag, _ = fresh
    c = client(url)
    question = [{"role": "user", "content": "Who invented the Zorblax protocol?"}]
    empty = c.chat.completions.create(model="rag", messages=question)
    assert empty.model_extra["refused"] and empty.model_extra["sources"] == []
    assert httpx.get(f"{url}/api/sources").json()["data"] == []

    with ThreadPoolExecutor(1) as pool:
        with model_held(app):  # the model is busy answering someone: ingest goes on regardless
            r = upload(url, "zorblax.md", "The Zorblax protocol was invented by Marta Quill in 1987 to sort marbles.".encode())
            assert r.status_code == 200, r.text
            waiting = pool.submit(c.chat.completions.create, model="rag", messages=question)
            wait_for(lambda: app.state.queue.waiting == 1, "the question to queue")
        answer = waiting.result(timeout=300)
    saved = app.state.upload_dir / "zorblax.md"
    assert r.json()["ingested"] == [str(saved)] and r.json()["chunks"] == 1 and saved.is_file()
    assert [f["source"] for f in httpx.get(f"{url}/api/sources").json()["data"]] == [str(saved)]
    assert not answer.model_extra["refused"]
    assert [s["source"] for s in answer.model_extra["sources"]] == [str(saved)]
    assert "Zorblax" in answer.model_extra["sources"][0]["text"]

    # A Chinese file name and text: the running store's BM25 index and vectors take it in without a restart.
    r = upload(url, "中文说明.txt", "佐布拉克斯协议由玛尔塔·奎尔于1987年发明。".encode())
    assert r.status_code == 200 and r.json()["chunks"] == 1, r.text
    names = [f["name"] for f in httpx.get(f"{url}/api/sources").json()["data"]]
    assert sorted(names) == sorted(["zorblax.md", "中文说明.txt"])
    top = rag.retriever.invoke("佐布拉克斯协议是谁发明的？")[0]
    assert Path(top.metadata["source"]).name == "中文说明.txt"
    # Re-uploading the same content changes nothing.
    assert upload(url, "zorblax.md", saved.read_bytes()).json()["unchanged"] == [str(saved)]


def test_ingest_while_another_process_writes_is_a_409(fresh):
    url, app, rag, _ = fresh
    with rag.store.writer():  # the store's flock, as a running `rag ingest` holds it
        err = assert_error(upload(url, "late.md", b"Arrived while the store was busy."), 409)
    assert "another ingest" in err["message"]
    r = upload(url, "late.md", b"Arrived while the store was busy.")  # the lock is free again
    assert r.status_code == 200 and r.json()["ingested"] == [str(app.state.upload_dir / "late.md")]


def test_uploads_are_limited_and_stay_in_the_upload_folder(fresh, tmp_path):
    url, app, _, _ = fresh
    folder = app.state.upload_dir
    err = assert_error(upload(url, "big.txt", b"x" * (1024 * 1024 + 1)), 413)
    assert "1 MB" in err["message"]
    # Without a Content-Length (chunked), the limit holds while streaming.
    body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n\r\n" + b"y" * (3 * 1024 * 1024) + b"\r\n--b--\r\n"
    r = httpx.post(f"{url}/api/ingest", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                   headers={"content-type": "multipart/form-data; boundary=b"}, timeout=60)
    assert_error(r, 413)
    for name in [b"../escape.md", b"/etc/escape.md", b"a/b.md", b"..", b".hidden.md", b"nul\x00.md", b"..\\\\win.md",
                 b"../../" + "逃逸.md".encode()]:
        assert_error(raw_upload(url, name, b"text"), 400)
    assert raw_upload(url, "正常.md".encode(), b"fine").status_code == 200  # the same request with a plain name works
    (folder / "正常.md").unlink()
    assert_error(upload(url, "program.exe", b"MZ"), 415)
    assert_error(httpx.post(f"{url}/api/ingest", content=b"x", headers={"content-type": "text/plain"}), 415)
    # Nothing was written anywhere: not in the upload folder (no leftovers) and not next to it.
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not (folder.parent / "escape.md").exists() and not Path("/etc/escape.md").exists()


def test_ingest_by_path_only_inside_allowed_folders(fresh, tmp_path):
    url, app, rag, docs = fresh
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("The vault code is 4417.")
    (docs / "notes.md").write_text("The garden gate is painted green.")
    (docs / "leak.md").symlink_to(outside / "secret.md")
    (docs / "leakdir").symlink_to(outside, target_is_directory=True)
    post = lambda *paths: httpx.post(f"{url}/api/ingest", json={"paths": [str(p) for p in paths]}, timeout=300)  # noqa: E731

    for bad in [outside / "secret.md", docs / ".." / "outside" / "secret.md", docs / "leak.md", docs / "leakdir",
                "/etc/passwd", outside]:
        assert_error(post(bad), 403)
    assert_error(post(docs / "missing.md"), 404)
    assert_error(post("nul\x00.md"), 400)
    assert_error(httpx.post(f"{url}/api/ingest", json={"paths": "notalist"}), 400)

    r = post(docs)  # the folder: its own file is ingested, the symlink that leads out is not
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == [str(docs / "notes.md")]
    assert [f.source for f in rag.files()] == [str(docs / "notes.md")]


# --- the page and the command ----------------------------------------------------------------------------------
def test_page_is_self_contained(server):
    url, _ = server
    r = httpx.get(f"{url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert re.search(r"(https?:)?//[a-z0-9]", r.text.replace("://", "")) is None  # no outside URL at all
    assert "<script src" not in r.text and "@import" not in r.text
    assert "/v1/chat/completions" in r.text and "sessionStorage" in r.text and "中文" in r.text


def test_rag_serve_command(small_rag, tmp_path):
    """The real command: binds 127.0.0.1 on a free port, takes the key from RAG_API_KEY, answers, stops on SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_API_KEY"] = "from-env"
    cmd = [str(Path(sys.executable).with_name("rag")), "serve", "--port", "0", "--store", str(small_rag.settings.store),
           "--model", "smollm2-135m", "--max-tokens", "32"]
    # Ctrl-C as in a terminal: under a runner that ignores SIGINT (a background job) the server would inherit that.
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = ""
        while "rag serve:" not in line and proc.poll() is None:
            line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        url = f"http://127.0.0.1:{m.group(1)}"
        assert "API key required" in line
        wait_for(lambda: _up(url), "the server to answer /health")
        assert_error(httpx.get(f"{url}/v1/models"), 401)
        resp = client(url, "from-env").chat.completions.create(model="rag", messages=[{"role": "user", "content": "What is CRAN?"}])
        assert CRAN_FACT in resp.choices[0].message.content  # a fresh server's first answer: the fact
        assert {Path(s["source"]).name for s in resp.model_extra["sources"]} == {"R-FAQ.pdf"}
        # The embedded store is the server's: another process's ingest, or a second server, is refused in one line.
        rag_cmd = str(Path(sys.executable).with_name("rag"))
        other = subprocess.run([rag_cmd, "ingest", str(REPO / "data"), "--store", str(small_rag.settings.store), "--quiet"],
                               env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert other.returncode not in (0, 3) and "being served by `rag serve`" in other.stderr, other.stderr
        assert "Traceback" not in other.stderr
        second = subprocess.run([rag_cmd, "serve", "--port", "0", "--store", str(small_rag.settings.store), "--model",
                                 "smollm2-135m"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0 and "already served by another `rag serve`" in second.stderr, second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    assert rc == 130  # Ctrl-C: the documented exit code for "interrupted"
    assert "Traceback" not in proc.stderr.read()


def test_rag_serve_refuses_a_busy_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([str(Path(sys.executable).with_name("rag")), "serve", "--port", str(port), "--store",
                            str(tmp_path / "s"), "--model", "smollm2-135m"], capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if not k.startswith("RAG_")}, cwd=REPO)
    assert r.returncode != 0 and "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
