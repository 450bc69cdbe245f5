"""The cold path imports only what each command needs, each checked in a fresh process: a question is embedded
and answered by retrieval without sentence-transformers, transformers or torch, and finds what the full model
finds; a re-ingest with nothing to do loads no embedding stack and no Chroma, and prints the command's wall time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from conftest import make_settings, rag_with

from rag.api import RAG
from rag.embeddings import LocalEmbeddings, make_query_embeddings
from rag.models.packaged import embedding_model_path
from rag.retrieval.hybrid import HybridRetriever

FULL_STACK = ("sentence_transformers", "transformers", "torch")

QUESTION_CHILD = """
import json, sys
from rag import privacy
privacy.apply()
from rag.api import RAG
from rag.config import Settings
# Untranslated: the store holds English and Chinese, and a translation would load the chat model (test_crosslingual).
rag = RAG(Settings.load(config_file=None, env={}, overrides={"store": sys.argv[1], "cache_dir": sys.argv[2],
                                                             "translate_questions": "off"}))
docs = rag.retriever.invoke(sys.argv[3])
print(json.dumps({"ids": [d.id for d in docs], "embedder": type(rag.retriever.embeddings).__name__,
                  "loaded": [m for m in sys.argv[4].split(",") if m in sys.modules]}))
"""

NOOP_CHILD = """
import json, sys, time
before_rag = time.monotonic()
from rag.cli import main
from rag.cli.common import process_seconds
imported = time.monotonic() - before_rag
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    print(json.dumps({"loaded": [m for m in sys.argv[1].split(",") if m in sys.modules],
                      "imported": imported, "age": process_seconds()}))
"""


def _run(code: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads(out.stdout.strip().splitlines()[-1])


def test_a_question_is_answered_without_the_full_embedding_stack(small_rag, tmp_path):
    settings = small_rag.settings
    make_query_embeddings(settings)  # the converted model is in the cache folder (converted now if it was not)
    question = "What is CRAN?"
    # What sentence-transformers' own float32 question vector retrieves (the session's embedder may be bf16).
    model = small_rag.embedding_model  # the setting is "auto"; this store's (built with the session's MiniLM)
    full = LocalEmbeddings(embedding_model_path(model), model, backend="torch")
    expected = [d.id for d in HybridRetriever(store=small_rag.store, embeddings=full, k=settings.k).invoke(question)]
    _, got = _run(QUESTION_CHILD, str(settings.store), str(settings.cache_dir), question, ",".join(FULL_STACK))
    assert got["embedder"] == "LightEmbeddings"
    assert got["loaded"] == []
    assert got["ids"] == expected
    assert len(expected) == settings.k


def test_a_reingest_with_nothing_to_do_loads_no_model_and_prints_its_wall_time(tmp_path, embeddings):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pelicans\n\nPelicans are large water birds with a pouch under the beak.\n")
    (docs / "b.txt").write_text("The R FAQ says that CRAN is a collection of sites which carry identical material.\n")
    store = tmp_path / "store"
    assert len(rag_with(store, embeddings).ingest(docs).ingested) == 2
    started = time.monotonic()
    out, got = _run(NOOP_CHILD, ",".join((*FULL_STACK, "chromadb", "openvino", "llama_cpp")), "ingest", str(docs),
                    "--store", str(store), "-q")
    wall = time.monotonic() - started
    assert got["loaded"] == []
    summary = re.search(r"^2 files: 0 ingested, 2 unchanged, 0 skipped, 0 failed; 0 pages, 0 chunks in ([0-9.]+) s\.",
                        out.stdout, re.M)
    assert summary, out.stdout
    # The printed time is the process's age, start-up and imports included: at least what importing rag took
    # (measured inside, after start-up), at most the wall time seen from outside (to the printed rounding).
    printed = float(summary.group(1))
    assert got["age"] >= got["imported"]
    assert printed <= wall + 0.05
    assert printed >= round(got["imported"], 1) - 0.05


def test_the_store_checks_its_embedding_model_without_opening_chroma(tmp_path, embeddings):
    (tmp_path / "a.md").write_text("Pelicans are large water birds with a pouch under the beak.\n")
    rag = rag_with(tmp_path / "store", embeddings)
    rag.ingest(tmp_path / "a.md")  # an empty store would take any model: this one holds MiniLM's vectors
    rag.store.close()
    code = ("import sys\nfrom rag.storage.store import Store, StoreError\nfrom rag.config import Settings\n"
            "s = Settings.load(config_file=None, env={}, overrides={'store': sys.argv[1]})\n"
            "try:\n    Store(s, 'another-model')\nexcept StoreError as exc:\n    print(exc)\n"
            "print('chromadb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.splitlines() == [
        f"{tmp_path / 'store'}: store was built with embedding model 'all-MiniLM-L6-v2', not 'another-model'; "
        "run `rag reset` (then ingest again) or choose another --store", "False"]


def test_a_ready_made_question_embedder_is_used_and_loads_nothing_else(tmp_path, embeddings):
    rag = RAG(make_settings(tmp_path / "store"), query_embeddings=embeddings)
    assert rag.retriever.embeddings is embeddings
    assert "embeddings" not in rag.__dict__  # the ingest embedder was not built for it
