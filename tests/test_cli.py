"""The CLI through click's runner, and once through the installed entry point in a subprocess."""

import codecs
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.api import RAG
from rag.cli import main
from tests.conftest import CRAN_FACT, DATA, DATA_FILES, DATA_INGESTED, DATA_PAGES


@pytest.fixture
def runner(monkeypatch, tmp_path):
    # The CLI reads settings from the environment; keep the developer's own out of the tests.
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAG_KEEP_ALIVE", "0")  # answered in this process (the background server: test_daemon.py)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_help_of_every_command(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "ingest" in result.output and "ask" in result.output
    for cmd in ["ingest", "ask", "chat", "list", "delete", "reset", "stats"]:
        result = runner.invoke(main, [cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "--store" in result.output, cmd
    assert "--json" in runner.invoke(main, ["ask", "--help"]).output
    assert "--prune" in runner.invoke(main, ["ingest", "--help"]).output
    assert "--ocr" in runner.invoke(main, ["ingest", "--help"]).output
    result = runner.invoke(main, ["config"])
    assert result.exit_code == 0 and "chunk_size = 200" in result.output and "RAG_STORE" in result.output


@pytest.fixture
def built(monkeypatch):
    """Every RAG the CLI builds in this process, kept to look at (or ask again) afterwards."""
    import rag.api

    rags = []
    real_init = rag.api.RAG.__init__

    def record(self, *a, **kw):  # the real RAG; only remembered
        real_init(self, *a, **kw)
        rags.append(self)

    monkeypatch.setattr(rag.api.RAG, "__init__", record)
    return rags


def test_ingest_ask_json_list(runner, small_rag, tmp_path, built):
    store = str(tmp_path / "store")
    result = runner.invoke(main, ["ingest", str(DATA), "--store", store, "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"{DATA_FILES} files: {DATA_INGESTED} ingested, 0 unchanged, 0 skipped, 0 failed" in result.output
    result = runner.invoke(main, ["ingest", str(DATA), "--store", store])
    assert f"0 ingested, {DATA_INGESTED} unchanged" in result.output
    result = runner.invoke(main, ["ask", "Who originally wrote R?", "--store", store, "--model", "smollm2-135m",
                                  "--max-tokens", "48", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # The JSON holds the answer and sources as the Python API gives them: a RAG of the same settings with a model
    # of its own, asked as its first prompt (as the CLI's was), answers word for word the same.
    # Its own embedder too: data/ holds Chinese text, so `auto` gave this store multilingual-e5-small.
    expected = RAG(built[-1].settings).ask("Who originally wrote R?")
    assert payload["answer"] == expected.text and payload["refused"] is expected.refused
    assert [(s["source"], s["page"], s["text"]) for s in payload["sources"]] == [(s.source, s.page, s.text) for s in expected.sources]
    for s in payload["sources"]:
        assert set(s) >= {"source", "page", "text", "score"}
    # A context too small for 4 passages: --verbose says, on stderr, what was left out and why.
    result = runner.invoke(main, ["ask", "How can R be installed on Windows?", "--store", store, "--model", "smollm2-135m",
                                  "--n-ctx", "700", "--max-tokens", "32", "--verbose"])
    assert result.exit_code == 0, result.output
    dropped = [line for line in result.stderr.splitlines() if line.startswith("dropped: ")]
    assert dropped and all("n_ctx 700" in line or "below min_score" in line for line in dropped), result.stderr
    assert "dropped: " not in result.stdout
    result = runner.invoke(main, ["list", "--store", store])
    assert "R-FAQ.pdf" in result.output and "52 pages" in result.output
    result = runner.invoke(main, ["stats", "--store", store])
    assert f"files: {DATA_INGESTED}" in result.output and f"pages: {DATA_PAGES}" in result.output
    result = runner.invoke(main, ["delete", str(DATA / "R-FAQ.pdf"), "--store", store])
    assert result.exit_code == 0 and "deleted" in result.output
    result = runner.invoke(main, ["delete", str(DATA / "R-FAQ.pdf"), "--store", store])
    assert result.exit_code == 2 and "not in the store" in result.output
    result = runner.invoke(main, ["reset", "--store", store], input="n\n")
    assert result.exit_code == 1 and f"files: {DATA_INGESTED - 1}" in runner.invoke(main, ["stats", "--store", store]).output
    result = runner.invoke(main, ["reset", "--store", store, "--yes"])
    assert result.exit_code == 0 and "files: 0" in runner.invoke(main, ["stats", "--store", store]).output


def test_user_errors_are_one_line(runner, tmp_path):
    result = runner.invoke(main, ["ask", "anything", "--store", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "store is empty" in result.output
    result = runner.invoke(main, ["ingest", str(tmp_path / "missing"), "--store", str(tmp_path / "s"), "-q"])
    assert result.exit_code == 3 and "no such file or folder" in result.output
    bad = tmp_path / "rag.toml"
    bad.write_text("k = [")
    result = runner.invoke(main, ["--config", str(bad), "list"])
    assert result.exit_code == 2 and "not valid TOML" in result.output
    assert "Traceback" not in result.output


def test_installed_entry_point_in_a_subprocess(small_rag, tmp_path):
    exe = Path(sys.executable).with_name("rag")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_KEEP_ALIVE"] = "0"  # in process (the background server: test_daemon.py)
    start = time.perf_counter()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env, check=True)
    help_seconds = time.perf_counter() - start
    assert "Ask questions about your own documents" in out.stdout
    # `--help` must not import the heavy libraries (that is what keeps it fast).
    probe = subprocess.run([sys.executable, "-c", "import sys, rag.cli; print(sorted(m for m in ('torch','chromadb','llama_cpp','sentence_transformers') if m in sys.modules))"],
                           capture_output=True, text=True, env=env, check=True)
    assert probe.stdout.strip() == "[]", (probe.stdout, help_seconds)
    store = str(small_rag.settings.store)
    out = subprocess.run([str(exe), "ask", "What is CRAN?", "--store", store, "--model", "smollm2-135m", "--max-tokens", "40", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert CRAN_FACT in payload["answer"]
    assert payload["sources"] and all(s["source"].endswith((".pdf", ".md")) for s in payload["sources"])
    assert "Traceback" not in out.stderr and "DeprecationWarning" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "rag", "--version"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("rag ")


def test_hardware_flags_reach_llama_cpp(runner, small_rag, built):
    """--threads, --batch-size, --n-ctx and --n-gpu-layers end up in the loaded llama.cpp model."""
    result = runner.invoke(main, ["ask", "What is CRAN?", "--store", str(small_rag.settings.store), "--model", "smollm2-135m",
                                  "--max-tokens", "8", "--threads", "1", "--batch-size", "64", "--n-ctx", "1024",
                                  "--n-gpu-layers", "0", "--json"])
    assert result.exit_code == 0, result.output
    llama = built[-1].llm.client
    assert (llama.n_batch, llama.n_ctx(), llama.context_params.n_threads) == (64, 1024, 1)
    # The flags' model answers (its first prompt) as a model loaded in process with the same settings does.
    assert json.loads(result.stdout)["answer"] == RAG(built[-1].settings, embeddings=small_rag.embeddings).ask("What is CRAN?").text


class ChildOutput:
    """A child's stdout and stderr, read by two threads as it writes them; `wait_until` wakes on each new piece of
    text (or the child's end), so a test waits for what it expects to read, not for a clock."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.text = {"out": "", "err": ""}
        self.open = 2
        self.changed = threading.Condition()
        for name, stream in (("out", proc.stdout), ("err", proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        while piece := os.read(stream.fileno(), 4096):  # whatever has arrived: a token, a line, a block
            with self.changed:
                self.text[name] += decode(piece)
                self.changed.notify_all()
        with self.changed:
            self.open -= 1
            self.changed.notify_all()

    def wait_until(self, pred, what: str) -> None:
        # The timeout only bounds a hung child; the wait itself ends on the event that makes pred() true.
        with self.changed:
            self.changed.wait_for(lambda: pred(self.text["out"], self.text["err"]) or self.open == 0, timeout=900)
            if not pred(self.text["out"], self.text["err"]):
                state = "ended" if self.open == 0 else "is still running (900 s)"
                raise AssertionError(f"waiting for {what}, the chat {state}: {self.text['out'][-800:]} {self.text['err'][-1500:]}")


def test_chat_repl_sources_ctrl_c_and_exit(small_rag):
    """The real `rag chat` in a subprocess: /sources repeats the last answer's passages; Ctrl-C while an
    answer streams stops that answer, not the session (the next question is answered); /exit ends it."""
    exe = Path(sys.executable).with_name("rag")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_KEEP_ALIVE"] = "0"  # in process (the background server: test_daemon.py)
    proc = subprocess.Popen([str(exe), "chat", "--store", str(small_rag.settings.store), "--model", "smollm2-135m",
                             "--max-tokens", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            # Ctrl-C as in a terminal: under a runner that ignores SIGINT the chat would inherit that.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = ChildOutput(proc)
    # The REPL asks for each line with "\n> " on stderr: the Nth prompt means the chat is idle again.
    idle = lambda n: lambda out, err: err.count("\n> ") >= n  # noqa: E731
    answered = lambda after: lambda out, err: "Sources:" in out[after:] or "Nearest passages" in out[after:]  # noqa: E731

    def say(line: str) -> None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    try:
        output.wait_until(idle(1), "the first prompt")
        say("What is CRAN?")
        # stdout and stderr are two pipes read by two threads: the next prompt on stderr can be read before the
        # answer's sources on stdout, so each wait is for both.
        output.wait_until(lambda out, err: idle(2)(out, err) and answered(0)(out, err), "the first answer")
        first = output.text["out"]
        say("/sources")
        output.wait_until(lambda out, err: idle(3)(out, err) and out.count("R-FAQ.pdf") > first.count("R-FAQ.pdf"),
                          "/sources")
        mark = len(output.text["out"])
        say("Write a very long, detailed essay about everything the R FAQ says, section by section.")
        output.wait_until(lambda out, err: len(out) > mark + 20, "the second answer to start streaming")
        proc.send_signal(signal.SIGINT)
        output.wait_until(lambda out, err: "(stopped)" in err and idle(4)(out, err), "the answer to stop")
        mark = len(output.text["out"])
        say("What is CRAN?")
        output.wait_until(lambda out, err: idle(5)(out, err) and answered(mark)(out, err), "an answer after Ctrl-C")
        say("/exit")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output.wait_until(lambda out, err: output.open == 0, "the chat's output to close")
    assert "R-FAQ.pdf, p. 13" in output.text["out"]  # the page that answers "What is CRAN?" was among the sources
    assert "Traceback" not in output.text["err"]


def test_an_unsupported_answer_is_marked_as_such(capsys):
    from rag.answer.chain import Answer, Source
    from rag.cli.ask import _print_sources

    near = Source(1, "/d/R-FAQ.pdf", 3, "R is a system for statistical computation.", 0.41)
    answer = Answer("Who wrote R?", "Warren Buffett wrote R [1].", [], [near], refused=True, refused_by="support")
    _print_sources(answer, show_context=False)
    assert capsys.readouterr().out.splitlines()[1:] == [
        "(Not supported: the passages do not hold most of this answer's words; treat it as \"the documents do not say\".)",
        "",
        "Nearest passages (not enough to answer):",
        "  [1] /d/R-FAQ.pdf, p. 3  (score 0.41)",
    ]

