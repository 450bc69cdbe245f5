"""Shared fixtures: real parts everywhere (a temporary Chroma store, the packaged embedding model, llama.cpp
with the small packaged model); heavy parts are loaded once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag import privacy

privacy.apply()  # the test process is an entry point too: the off switches before chromadb or torch load

from rag.api import RAG  # noqa: E402
from rag.config import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED = REPO.parent / "shared"

# data/ holds 4 files; the scanned one yields text only when the ocr extra is installed.
from rag.loaders import ocr as _ocr  # noqa: E402

DATA_FILES = 4
DATA_INGESTED = 4 if _ocr.available() else 3
DATA_PAGES = 52 + 1 + 1 + (1 if _ocr.available() else 0)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The team's shared corpus at ../shared; absent in a user's clone."""
    if not (SHARED / "corpus").is_dir():
        pytest.skip("../shared/corpus not present (only the team's checkouts have it)")
    return SHARED / "corpus"


def make_settings(store: Path, **overrides) -> Settings:
    # An empty env: the tests must not depend on the developer's RAG_* variables or rag.toml.
    return Settings.load(config_file=None, env={}, overrides={"store": store, **overrides})


@pytest.fixture(scope="session")
def embeddings():
    """The packaged MiniLM, loaded once."""
    return RAG(make_settings(Path("unused"))).embeddings


def rag_with(store: Path, embeddings, **overrides) -> RAG:
    rag = RAG(make_settings(store, **overrides))
    rag.__dict__["embeddings"] = embeddings  # share the loaded model across instances (cached_property slot)
    return rag


@pytest.fixture(scope="session")
def data_copy(tmp_path_factory) -> Path:
    """A private copy of data/ that tests may read (never modify: other session fixtures ingest it)."""
    dst = tmp_path_factory.mktemp("data") / "data"
    shutil.copytree(DATA, dst)
    return dst


@pytest.fixture(scope="session")
def small_rag(tmp_path_factory, embeddings, data_copy) -> RAG:
    """data/ ingested into a temporary store, answering with the small packaged model."""
    rag = rag_with(tmp_path_factory.mktemp("store"), embeddings, model="smollm2-135m", max_tokens=64)
    report = rag.ingest(data_copy)
    assert not report.failed, report.failed
    return rag


@pytest.fixture(scope="session")
def default_rag(small_rag) -> RAG:
    """The same store, answering with the default packaged 1.5B model."""
    rag = RAG(small_rag.settings.model_copy(update={"model": "qwen2.5-coder-1.5b", "max_tokens": 200}))
    rag.__dict__["embeddings"] = small_rag.embeddings
    rag.__dict__["store"] = small_rag.store
    return rag
