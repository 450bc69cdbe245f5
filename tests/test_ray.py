"""Ingest on a real Ray cluster on loopback (a head and one more node, one CPU each, every node its own raylet and
worker processes, as on real machines) into a real `chroma run`, compared with a local ingest of the same files.

A few files of ../shared/corpus/docs only: the whole folder takes tens of minutes on this 2-core machine (twice:
local and Ray), too long for CI; benchmarks/bench_ray.py ingests all of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rag.api import RAG
from tests.conftest import make_settings
from tests.test_scaleout import _free_port, start_chroma

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rag[ray]')")
from ray.cluster_utils import Cluster  # noqa: E402

# Markdown (English, Chinese), a .docx and a 30-page PDF: a few loaders, ~10 s of embedding on 2 cores.
SUBSET = ["en/pypdf-docs/robustness.md", "en/pypdf-docs/encryption-decryption.md", "en/pypdf-docs/merging-pdfs.md",
          "zh/trpl-zh-cn/ch01-01-installation.md", "en/doj-ch13-trustee-handbook-1p.docx", "en/R-data.pdf"]
# Ray's switch for the cluster's own processes (the test starts them, not rag): no usage reports. Ray's default
# health checks (a node dead after ~30 s of silence): faster ones declared nodes dead while they started on a
# loaded machine.
RAY_TEST_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_agent_register_timeout_ms": "180000"}
MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for key, value in RAY_TEST_ENV.items():
        mp.setenv(key, value)
    tmp = tmp_path_factory.mktemp("ray")
    mp.setenv("HOME", str(tmp))  # Ray's ~/.ray and the usage module's ~/ray_bootstrap_config.yaml: see the README
    (tmp / "ray_bootstrap_config.yaml").write_text("{}\n")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **agent_ports()})
    worker = nodes.add_node(num_cpus=1, **agent_ports())
    nodes.wait_for_nodes()
    try:
        yield nodes, worker
    finally:
        nodes.shutdown()
        mp.undo()


def agent_ports() -> dict[str, int]:
    """A node's agent ports chosen here: with 0 its raylet waits for the agents (Python processes) to write the
    ports they took, and gives up after 15 s, which a loaded 2-core machine missed (the raylet died at start)."""
    names = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    return {name: _free_port() for name in names}


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chroma")
    server = start_chroma(tmp / "db", tmp / "chroma.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docs(shared, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    for name in SUBSET:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared / "docs" / name, folder / name)
    return folder


def settings_for(store: Path, chroma, collection: str, **overrides):
    # MiniLM named, as the session's `embeddings` are: "auto" would choose e5 for a store with Chinese files.
    return make_settings(store, chroma_host="127.0.0.1", chroma_port=chroma.port, collection=collection, ocr="never",
                         embedding_model=MINILM, **overrides)


@pytest.fixture(scope="module")
def local(docs, chroma, embeddings, tmp_path_factory) -> RAG:
    rag = RAG(settings_for(tmp_path_factory.mktemp("local"), chroma, "local"), embeddings=embeddings)
    report = rag.ingest(docs)
    assert (len(report.ingested), report.failed) == (len(SUBSET), [])
    return rag


def contents(rag: RAG) -> dict[str, tuple[str, dict, list[float]]]:
    ids = [cid for rec in rag.files() for cid in rec.chunk_ids]
    return rag.store.vectors(ids)


def assert_same_store(ray_rag: RAG, local: RAG) -> None:
    """Same files, chunk ids, texts and metadata; vectors within cosine 0.9999; the same BM25 hits."""
    assert [(r.source, r.pages, r.chunks, r.sha256, r.status) for r in ray_rag.files()] == \
        [(r.source, r.pages, r.chunks, r.sha256, r.status) for r in local.files()]
    mine, theirs = contents(ray_rag), contents(local)
    assert sorted(mine) == sorted(theirs)
    assert ray_rag.store.count() == local.store.count() == len(theirs)
    for cid, (text, meta, vector) in theirs.items():
        assert (mine[cid][0], mine[cid][1]) == (text, meta), cid
        cosine = sum(a * b for a, b in zip(mine[cid][2], vector))
        assert cosine >= 0.9999, (cid, cosine)
    for query in ("merge two PDF files", "encrypt a PDF with a password", "安装 Rust", "read a CSV file into R"):
        hits = [(cid, round(score, 6)) for cid, score in ray_rag.store.lexical().search(query, 5)]
        assert hits == [(cid, round(score, 6)) for cid, score in local.store.lexical().search(query, 5)], query
        assert len(hits) == 5, query


def test_cli_ingest_on_ray_matches_a_local_ingest(cluster, chroma, docs, local, tmp_path):
    nodes, _worker = cluster
    store = tmp_path / "store"
    env = {**_clean_env(), "RAG_CHROMA_URL": f"127.0.0.1:{chroma.port}", "RAG_COLLECTION": "ray_cli", "RAG_OCR": "never",
           "RAG_EMBEDDING_MODEL": MINILM}
    rag_exe = str(Path(sys.executable).with_name("rag"))
    args = [rag_exe, "ingest", str(docs), "--store", str(store), "--ray", nodes.address, "-q"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith(f"6 files: 6 ingested, 0 unchanged, 0 skipped, 0 failed; {PAGES} pages, "
                                   f"{CHUNKS} chunks in "), first.stdout
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith("6 files: 0 ingested, 6 unchanged, 0 skipped, 0 failed; 0 pages, 0 chunks in "), again.stdout
    ray_rag = RAG(settings_for(store, chroma, "ray_cli"))
    assert_same_store(ray_rag, local)


def test_a_worker_node_killed_mid_ingest_loses_nothing(cluster, chroma, docs, local, tmp_path, caplog):
    """The second node dies (its raylet and workers killed) right after the first chunks are embedded: its read
    tasks run again on the head, its embedding actor's share is embedded by the head's, and the store ends as a
    local ingest's. Small batches, so that many embedding calls follow the kill."""
    nodes, worker = cluster
    rag = RAG(settings_for(tmp_path / "store", chroma, "ray_killed", ray_address=nodes.address, embedding_batch_size=8))
    killed = threading.Event()

    def progress(event: str, amount: object) -> None:
        if event == "chunks" and not killed.is_set():
            nodes.remove_node(worker, allow_graceful=False)  # in the pipeline's loop: the next step meets a dead node
            killed.set()

    report = rag.ingest(docs, progress=progress)
    assert killed.is_set()
    lost = [r.getMessage() for r in caplog.records if r.name == "rag.ingest.ray_ingest"]
    assert lost == ["an embedding actor was lost (its worker or node died): its chunks go to the 1 left"]
    assert (len(report.ingested), report.failed, report.chunks) == (len(SUBSET), [], CHUNKS)
    assert_same_store(rag, local)


def test_without_ray_the_flag_says_what_to_install(tmp_path):
    """A Python without Ray (here: its import blocked) gets one line naming the extra."""
    code = ("import sys; sys.modules['ray'] = None\n"
            "from rag.cli import main\n"
            f"main(['ingest', {str(tmp_path)!r}, '--store', {str(tmp_path / 'store')!r}, '--ray', 'auto'])\n")
    result = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (
        2, "error: --ray needs Ray, which is not installed: pip install 'rag[ray]'\n")


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


PAGES = 46  # of SUBSET: R-data.pdf's 41, and 1 for each other file
CHUNKS = 172
