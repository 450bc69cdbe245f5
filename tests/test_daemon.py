"""Warm answers: the real `rag ask`/`rag chat` in subprocesses start a real background server (the small packaged
model, a real store) on a private Unix socket, reuse it, and lose it after keep_alive; `rag ps` and `rag stop`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from rag.daemon.lifecycle import running, wait_exit
from tests.conftest import rag_with

EXE = Path(sys.executable).with_name("rag")
HEAVY = ("torch", "sentence_transformers", "chromadb", "llama_cpp")
DOCS = {
    "lighthouse.md": "The Varne lighthouse keeper is Mira Castell. She has kept the light since 1998 and winds the "
                     "clock of the lamp every evening at dusk.",
    "bakery.md": "The Harbour Street bakery opens at six in the morning and sells rye bread baked in a wood oven.",
}
KEEPER = "Who is the keeper of the Varne lighthouse?"
NEW_DOC = ("observatory.md", "The Kestrel Hill observatory has a telescope built by the instrument maker Jonas Pell "
                             "in 1911; its dome turns on cannon balls.")
TELESCOPE = "Who built the telescope at the Kestrel Hill observatory?"
ESSAY = "Write a very long, detailed essay about the Varne lighthouse, its keeper and the bakery, paragraph by paragraph."


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory, embeddings) -> Path:
    """Two small files ingested into a store (the background servers only read it)."""
    folder = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    store = tmp_path_factory.mktemp("store")
    rag = rag_with(store, embeddings)
    assert not rag.ingest(folder).failed
    rag.store.close()
    return store


class Daemons:
    """Runs `rag` with its own cache folder (so never the user's background servers) and stops what it started."""

    def __init__(self, root: Path, store: Path) -> None:
        self.cache = root / "c"  # short: a Unix socket's path holds 107 bytes
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        self.env.update(RAG_CACHE_DIR=str(self.cache), RAG_STORE=str(store), RAG_MODEL="smollm2-135m",
                        RAG_MAX_TOKENS="32", RAG_EMBEDDING_BACKEND="torch",
                        RAG_N_THREADS="1",  # one llama.cpp thread: no spinning threads starved on a shared machine
                        # A server outlives a slow step of its test on a loaded machine (an answer in process took
                        # 14 min under load 15): the tests of reuse must not see it time out (its own test sets 2).
                        RAG_KEEP_ALIVE="3600")

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(EXE), *args], capture_output=True, text=True, env={**self.env, **env}, timeout=900)

    def ask(self, question: str, *args: str, **env: str) -> dict:
        out = self.run("ask", question, "--json", *args, **env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    def servers(self) -> list[dict]:
        return running(self.cache)

    def only(self) -> dict:
        found = self.servers()
        assert len(found) == 1, found
        return found[0]

    def stop_all(self) -> None:
        self.run("stop", "--all")
        for row in self.servers():  # whatever `rag stop` could not end
            if row.get("pid"):
                os.kill(row["pid"], signal.SIGKILL)


@pytest.fixture
def daemons(docs_store):
    root = Path(tempfile.mkdtemp(prefix="ragd-"))
    d = Daemons(root, docs_store)
    try:
        yield d
    finally:
        d.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def names(answer: dict) -> set[str]:
    return {Path(s["source"]).name for s in answer["sources"]}


def test_starts_answers_is_reused_and_stops(daemons):
    cold = daemons.ask(KEEPER)
    assert "Mira Castell" in cold["answer"] and names(cold) == {"lighthouse.md"}, cold
    first = daemons.only()
    assert (first["state"], first["answered"], first["model_loads"], first["model"]) == ("idle", 1, 1, "smollm2-135m")
    assert first["store"] == str(Path(daemons.env["RAG_STORE"]).resolve())
    # The same question in this process, with the same settings, gets the same answer (each the model's first prompt).
    assert daemons.ask(KEEPER, "--no-daemon") == cold
    # Warm: the same server answers, with the same one model load, and the client imports none of the heavy parts.
    probe = ("import atexit, sys\n"
             f"atexit.register(lambda: print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
             "from rag.cli import main\n"
             f"main(['ask', {KEEPER!r}, '--json'], prog_name='rag')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=daemons.env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stderr, out.stderr[-2000:]
    assert "Mira Castell" in json.loads(out.stdout)["answer"]
    again = daemons.only()
    assert (again["pid"], again["answered"], again["model_loads"]) == (first["pid"], 2, 1)
    listed = daemons.run("ps")
    assert listed.returncode == 0 and str(first["pid"]) in listed.stdout and first["store"] in listed.stdout, listed.stdout
    stopped = daemons.run("stop")
    assert stopped.returncode == 0 and f"stopped {first['pid']}" in stopped.stdout, stopped
    assert wait_exit(first["pid"], 60)
    assert daemons.servers() == [] and not Path(first["socket"]).exists()


def test_socket_is_private(daemons):
    daemons.ask(KEEPER)
    sock = Path(daemons.only()["socket"])
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert sock.parent.stat().st_uid == os.getuid()
    if os.getuid() == 0:
        # Root may act as another user: a child that became `nobody` cannot even connect.
        code = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); s = socket.socket(socket.AF_UNIX)\n"
                "try: s.connect(sys.argv[1]); print('connected')\nexcept PermissionError: print('refused')")
        out = subprocess.run([sys.executable, "-c", code, str(sock)], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "refused", out
    with socket.socket(socket.AF_UNIX) as mine:  # and its owner can
        mine.connect(str(sock))


def test_exits_after_keep_alive_and_never_starts_when_told_not_to(daemons):
    daemons.ask(KEEPER, RAG_KEEP_ALIVE="2")
    server = daemons.only()
    assert server["keep_alive"] == 2
    assert wait_exit(server["pid"], 120)  # woken by the process's end, not by a clock
    assert daemons.servers() == [] and not Path(server["socket"]).exists()
    daemons.ask(KEEPER, "--no-daemon")
    daemons.ask(KEEPER, RAG_KEEP_ALIVE="0")
    assert daemons.servers() == []
    assert not list((daemons.cache / "daemons").glob("*.sock"))


def test_chat_outlives_its_server(daemons):
    """A chat whose server reached keep_alive while the user was typing starts it again for the next question."""
    from tests.test_cli import ChildOutput

    proc = subprocess.Popen([str(EXE), "chat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**daemons.env, "RAG_KEEP_ALIVE": "2"})
    output = ChildOutput(proc)
    answers = lambda n: lambda out, err: out.count("Sources:") + out.count("Nearest passages") >= n  # noqa: E731

    def say(line: str) -> None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    try:
        say(KEEPER)
        output.wait_until(answers(1), "the first answer")
        first = daemons.only()
        assert wait_exit(first["pid"], 120)  # gone after 2 idle seconds, the chat still open
        say("Since when has she kept the light?")
        output.wait_until(answers(2), "the answer after the server had gone")
        say("/exit")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Mira Castell" in output.text["out"]
    assert "note:" not in output.text["err"] and "Traceback" not in output.text["err"], output.text["err"]


def test_a_settings_change_replaces_the_server(daemons):
    daemons.ask(KEEPER, "--k", "2")
    old = daemons.only()
    daemons.ask(KEEPER, "--k", "3")
    new = daemons.only()
    assert new["pid"] != old["pid"] and new["key"] != old["key"] and new["answered"] == 1
    assert wait_exit(old["pid"], 60)
    daemons.ask(KEEPER, "--k", "3")
    assert daemons.only()["pid"] == new["pid"]
    # `rag chat` with the same settings talks to the same server, follow-up included.
    chat = subprocess.run([str(EXE), "chat", "--k", "3"], input=f"{KEEPER}\nSince when?\n/exit\n", capture_output=True,
                          text=True, env=daemons.env, timeout=900)
    assert chat.returncode == 0 and "Mira Castell" in chat.stdout, chat.stderr[-2000:]
    assert chat.stdout.count("Sources:") + chat.stdout.count("Nearest passages") == 2, chat.stdout
    assert (daemons.only()["pid"], daemons.only()["answered"]) == (new["pid"], 4)


def _start_streaming(daemons, question: str) -> tuple[subprocess.Popen, threading.Event]:
    """A `rag ask` whose answer has begun to stream (an event set by the thread reading its stdout)."""
    # Ctrl-C as in a terminal: a runner that ignores SIGINT (a shell's background job) would hand that on to the
    # client, whose Python then never raises KeyboardInterrupt and answers to the end (exit 0).
    proc = subprocess.Popen([str(EXE), "ask", question, "--max-tokens", "256"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**daemons.env, "RAG_MAX_TOKENS": "256"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    streaming = threading.Event()

    def read() -> None:
        got = b""
        while piece := os.read(proc.stdout.fileno(), 4096):
            got += piece
            if got.strip():  # the first token: signal at once, long before the answer could end
                streaming.set()
        streaming.set()  # ended: the waiter looks at what happened

    threading.Thread(target=read, daemon=True).start()
    return proc, streaming


def test_killed_and_interrupted_clients_stop_their_generation(daemons):
    daemons.ask(KEEPER, RAG_MAX_TOKENS="256")  # the server for these settings is warm
    pid = daemons.only()["pid"]
    for how in (signal.SIGKILL, signal.SIGINT):
        proc, streaming = _start_streaming(daemons, ESSAY)
        assert streaming.wait(900) and proc.poll() is None, proc.stderr.read()
        proc.send_signal(how)
        # Ctrl-C: exit code 130, as in process, with the one line "interrupted" and no traceback.
        assert proc.wait(60) == (-signal.SIGKILL if how == signal.SIGKILL else 130)
        if how == signal.SIGINT:
            assert proc.stderr.read().decode().strip().splitlines()[-1:] == ["interrupted"]
        answer = daemons.ask(KEEPER, RAG_MAX_TOKENS="256")  # the next question is answered, whole
        assert "Mira Castell" in answer["answer"], answer
        server = daemons.only()
        finishes = server["finishes"]
        # The same server: the essay's generation stopped when its client went away, well before its 256 tokens,
        # and the next question got the model.
        assert server["pid"] == pid and [f["finish"] for f in finishes[-2:]] == ["disconnected", "stop"], finishes
        assert finishes[-2]["tokens"] < 256, finishes


def test_two_clients_at_once_start_one_server_and_queue(daemons):
    results = [None, None]

    def ask(i: int) -> None:
        results[i] = daemons.run("ask", KEEPER, "--json")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    server = daemons.only()
    assert server["answered"] == 2 and server["model_loads"] == 1
    assert all("Mira Castell" in json.loads(r.stdout)["answer"] for r in results)


def test_dead_or_hung_server_answers_in_process_with_one_line(daemons):
    daemons.ask(KEEPER)
    dead = daemons.only()
    os.kill(dead["pid"], signal.SIGKILL)
    assert wait_exit(dead["pid"], 60)
    assert Path(dead["socket"]).exists()  # it could not clean up
    out = daemons.run("ask", KEEPER, "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Mira Castell" in json.loads(out.stdout)["answer"]
    notes = [line for line in out.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the background rag server ({dead['socket']}) is gone; answering in this process"], out.stderr
    assert "Traceback" not in out.stderr
    daemons.ask(KEEPER)  # the stale socket was cleared: a fresh server
    hung = daemons.only()
    assert hung["pid"] != dead["pid"]
    os.kill(hung["pid"], signal.SIGSTOP)
    try:
        out = daemons.run("ask", KEEPER, "--json")
    finally:
        os.kill(hung["pid"], signal.SIGCONT)
    assert out.returncode == 0 and "Mira Castell" in json.loads(out.stdout)["answer"], out.stderr[-2000:]
    assert f"note: the background rag server ({hung['socket']}) does not answer; answering in this process" in out.stderr


def test_ingest_while_warm_is_seen_by_the_next_question(daemons, tmp_path):
    store = tmp_path / "store"
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    env = {"RAG_STORE": str(store)}
    assert daemons.run("ingest", str(folder), "-q", **env).returncode == 0
    daemons.ask(KEEPER, **env)
    warm = daemons.only()
    (folder / NEW_DOC[0]).write_text(NEW_DOC[1], encoding="utf-8")
    ingested = daemons.run("ingest", str(folder), "-q", **env)  # not refused: the server does not own the store
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    answer = daemons.ask(TELESCOPE, **env)
    assert "Jonas Pell" in answer["answer"] and names(answer) == {NEW_DOC[0]}, answer
    after = daemons.only()
    assert (after["pid"], after["store_reopened"]) == (warm["pid"], 1)
    bm25 = sorted((p.name, p.stat().st_mtime_ns) for p in (store / "bm25").rglob("*") if p.is_file())
    daemons.ask(TELESCOPE, **env)  # nothing changed: the store is not opened again, nothing is rewritten
    assert daemons.only()["store_reopened"] == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (store / "bm25").rglob("*") if p.is_file()) == bm25
