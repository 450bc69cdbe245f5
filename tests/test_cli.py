"""The CLI through click's runner, and once through the installed entry point in a subprocess."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import main
from tests.conftest import DATA, DATA_FILES, DATA_INGESTED, DATA_PAGES


@pytest.fixture
def runner(monkeypatch, tmp_path):
    # The CLI reads settings from the environment; keep the developer's own out of the tests.
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
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


def test_ingest_ask_json_list(runner, small_rag, tmp_path):
    store = str(tmp_path / "store")
    result = runner.invoke(main, ["ingest", str(DATA), "--store", store, "--quiet"])
    assert result.exit_code == 0, result.output
    skipped = DATA_FILES - DATA_INGESTED
    assert f"{DATA_FILES} files: {DATA_INGESTED} ingested, 0 unchanged, {skipped} skipped, 0 failed" in result.output
    result = runner.invoke(main, ["ingest", str(DATA), "--store", store])
    assert f"0 ingested, {DATA_INGESTED} unchanged" in result.output
    result = runner.invoke(main, ["ask", "Who originally wrote R?", "--store", store, "--model", "smollm2-135m",
                                  "--max-tokens", "48", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert isinstance(payload["answer"], str) and payload["answer"]
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
    assert payload["answer"] and all(s["source"].endswith((".pdf", ".md")) for s in payload["sources"])
    assert "Traceback" not in out.stderr and "DeprecationWarning" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "rag", "--version"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.startswith("rag ")


def test_hardware_flags_reach_llama_cpp(runner, small_rag, monkeypatch):
    """--threads, --batch-size, --n-ctx and --n-gpu-layers end up in the loaded llama.cpp model."""
    import rag.api

    built = []
    real_init = rag.api.RAG.__init__

    def record(self, *a, **kw):  # keep the real RAG; only remember it, to look at its loaded model afterwards
        real_init(self, *a, **kw)
        built.append(self)

    monkeypatch.setattr(rag.api.RAG, "__init__", record)
    result = runner.invoke(main, ["ask", "What is CRAN?", "--store", str(small_rag.settings.store), "--model", "smollm2-135m",
                                  "--max-tokens", "8", "--threads", "1", "--batch-size", "64", "--n-ctx", "1024",
                                  "--n-gpu-layers", "0", "--json"])
    assert result.exit_code == 0, result.output
    llama = built[-1].llm.client
    assert (llama.n_batch, llama.n_ctx(), llama.context_params.n_threads) == (64, 1024, 1)
    assert json.loads(result.stdout)["answer"]


def test_chat_repl_sources_ctrl_c_and_exit(small_rag):
    """The real `rag chat` in a subprocess: /sources repeats the last answer's passages; Ctrl-C while an
    answer streams stops that answer, not the session (the next question is answered); /exit ends it."""
    import signal
    import threading

    exe = Path(sys.executable).with_name("rag")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    proc = subprocess.Popen([str(exe), "chat", "--store", str(small_rag.settings.store), "--model", "smollm2-135m",
                             "--max-tokens", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    err: list[str] = []
    for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=lambda s=stream, k=sink: [k.append(c) for c in iter(lambda: s.read(1), "")], daemon=True).start()

    def wait_for(pred, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert proc.poll() is None, f"chat ended early while waiting for {what}: {''.join(err)[-1500:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {''.join(out)[-800:]}"
            time.sleep(0.05)

    def say(line: str) -> None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    try:
        say("What is CRAN?")
        wait_for(lambda: "".join(out).count("Sources:") + "".join(out).count("Nearest passages") >= 1, "the first answer")
        first = "".join(out)
        say("/sources")
        wait_for(lambda: "".join(out).count("R-FAQ.pdf") > first.count("R-FAQ.pdf"), "/sources")
        mark = len("".join(out))
        say("Write a very long, detailed essay about everything the R FAQ says, section by section.")
        wait_for(lambda: len("".join(out)) > mark + 20, "the second answer to start streaming")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "(stopped)" in "".join(err), "the answer to stop")
        mark = len("".join(out))
        say("What is CRAN?")
        wait_for(lambda: "Sources:" in "".join(out)[mark:] or "Nearest passages" in "".join(out)[mark:], "an answer after Ctrl-C")
        say("/exit")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in "".join(err)
