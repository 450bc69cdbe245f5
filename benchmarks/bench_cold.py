"""The cold path: what a fresh `rag` process spends before it retrieves, phase by phase, and what a re-ingest
with nothing to do costs; each measured in a new process per round (the files in the page cache, as on a
second run), rounds interleaved, medians printed. Prints figures and same-run ratios; asserts nothing.

    python benchmarks/bench_cold.py [--store DIR] [--cache-dir DIR] [--rounds R] [--parts question,candidates,noop]
                                    [--onnx FILE]

  question    a fresh process up to the first retrieval, as `rag ask` runs it: start-up (interpreter and
              rag's imports), embedder (the question path's, and its first vector), store (Chroma opened), BM25
              (the index loaded), retrieval (`RAG.retriever.invoke`); and which heavy modules it imported
  candidates  import + first vector of one question, each runtime in its own process: sentence-transformers
              (the full model), OpenVINO float32 (`LightEmbeddings`, rag's question path) and onnxruntime
              (float32; the model exported once by torch.onnx.export, which needs the `onnx` package, or --onnx)
  noop        `rag ingest data/` into a store that already holds it: the wall time seen from outside, and the
              time the command prints

Without --store, data/ is ingested (OCR off) into a temporary store first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ingest import machine  # noqa: E402

HEAVY = ("torch", "transformers", "sentence_transformers", "chromadb", "openvino", "onnxruntime", "bm25s", "jieba",
         "llama_cpp")
QUESTION = "What is CRAN?"

# Each child prints one JSON line of phase -> seconds; `process_seconds` counts from the process's start.
# QUESTION_PHASES is `rag ask`'s path up to the first retrieval (argv: settings overrides as JSON, the question);
# bench_phases.py goes on from it to the answer.
QUESTION_PHASES = """
import json, sys, time
from rag.cli.common import process_seconds
t = {"start-up": process_seconds()}
def mark(name):
    t[name] = process_seconds() - sum(v for v in t.values() if isinstance(v, float))
from rag import privacy
privacy.apply()
from rag.api import RAG
from rag.config import Settings
mark("imports")
rag = RAG(Settings.load(config_file=None, env={}, overrides=json.loads(sys.argv[1])))
rag.query_embeddings.embed_query("warm-up")
mark("embedder")
rag.store.count()
mark("store")
rag.store.lexical()
mark("BM25")
docs = rag.retriever.invoke(sys.argv[2])
mark("retrieval")
"""
QUESTION_CHILD = QUESTION_PHASES + """
t["total"] = process_seconds()
t["modules"] = [m for m in sys.argv[3].split(",") if m in sys.modules]
t["top"] = docs[0].id if docs else None
print(json.dumps(t))
"""

CANDIDATE_CHILD = """
import json, sys, time
from pathlib import Path
from rag.cli.common import process_seconds
t0 = process_seconds()
from rag import privacy
privacy.apply()
kind, model_dir, cache_dir, onnx_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
if kind == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    vector = model.encode(["What is CRAN?"], normalize_embeddings=True)[0]
elif kind == "openvino":
    from rag.embeddings.light import LightEmbeddings, read_recipe
    vector = LightEmbeddings(model_dir, "m", read_recipe(model_dir), cache_dir=cache_dir).embed_query("What is CRAN?")
else:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer
    from rag.embeddings.light import pool
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    enc = tok.encode("What is CRAN?")
    feed = {"input_ids": np.array([enc.ids]), "attention_mask": np.ones((1, len(enc.ids)), dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids])}
    tokens = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    vector = pool(tokens, feed["attention_mask"], "mean_tokens")[0]
    vector = vector / np.linalg.norm(vector)
print(json.dumps({"seconds": process_seconds() - t0, "startup": t0, "vector": [float(x) for x in vector]}))
"""


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=_env())
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


def export_onnx(model_dir: Path, path: Path) -> str | None:
    """The transformer exported once by torch.onnx.export (its TorchScript exporter, which needs the `onnx`
    package, not a dependency of rag), or None with the reason printed."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        print(f"onnxruntime candidate left out: {exc}")
        return None
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    names = ["input_ids", "token_type_ids", "attention_mask"]
    sample = st.tokenizer(["a sample text", "and a longer sample text"], padding=True, return_tensors="pt")

    class Bert(torch.nn.Module):  # positional inputs: the TorchScript exporter passes no keywords
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, token_type_ids, attention_mask):
            return self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                             attention_mask=attention_mask).last_hidden_state

    try:
        torch.onnx.export(Bert(st[0].model.eval()), tuple(sample[k] for k in names), str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamo=False,
                          dynamic_axes={k: {0: "batch", 1: "tokens"} for k in names})
    except Exception as exc:  # onnx missing, or the exporter's own failure
        print(f"onnxruntime candidate left out: the export failed ({type(exc).__name__}: {str(exc)[:200]})")
        return None
    return str(path)


def ensure_store(store: Path | None, cache_dir: Path) -> Path:
    if store is not None:
        return store
    store = Path(tempfile.mkdtemp(prefix="bench-cold-")) / "store"
    env = {**_env(), "RAG_CACHE_DIR": str(cache_dir), "RAG_OCR": "never"}
    subprocess.run([sys.executable, "-m", "rag", "ingest", str(REPO / "data"), "--store", str(store), "-q"],
                   check=True, env=env, capture_output=True)
    return store


def bench_question(store: Path, cache_dir: Path, rounds: int) -> None:
    overrides = json.dumps({"store": str(store), "cache_dir": str(cache_dir)})
    runs = [child(QUESTION_CHILD, overrides, QUESTION, ",".join(HEAVY)) for _ in range(rounds)]
    print(f"\n`rag ask` path up to retrieval, fresh process, medians of {rounds}:")
    for phase in ("start-up", "imports", "embedder", "store", "BM25", "retrieval", "total"):
        values = [r[phase] for r in runs]
        print(f"  {phase:10s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, max {max(values):.2f})")
    print(f"  heavy modules imported: {', '.join(runs[0]['modules'])}; top chunk {runs[0]['top']}")


def bench_candidates(cache_dir: Path, rounds: int, onnx_file: str | None) -> None:
    import numpy as np

    from rag.models.packaged import embedding_model_path

    model_dir = embedding_model_path("all-MiniLM-L6-v2")
    onnx = onnx_file or export_onnx(model_dir, cache_dir / "bench-minilm.onnx")
    kinds = ["sentence-transformers", "openvino"] + (["onnxruntime"] if onnx else [])
    child(CANDIDATE_CHILD, "openvino", str(model_dir), str(cache_dir), "")  # converts the model once if missing
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(rounds):  # interleaved: load changes hit every candidate alike
        for kind in kinds:
            runs[kind].append(child(CANDIDATE_CHILD, kind, str(model_dir), str(cache_dir), onnx or ""))
    reference = np.asarray(runs["sentence-transformers"][0]["vector"])
    base = statistics.median(r["seconds"] for r in runs["sentence-transformers"])
    print(f"\nimport + first question vector (after interpreter start-up), medians of {rounds}:")
    for kind in kinds:
        median = statistics.median(r["seconds"] for r in runs[kind])
        cosine = float(np.asarray(runs[kind][0]["vector"]) @ reference)
        print(f"  {kind:22s} {median:6.2f} s  ({base / median:5.1f}x faster than sentence-transformers; "
              f"cosine to it {cosine:.6f})")


def bench_noop(store: Path, cache_dir: Path, rounds: int) -> None:
    env = {**_env(), "RAG_CACHE_DIR": str(cache_dir), "RAG_OCR": "never"}
    walls, printed = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "rag", "ingest", str(REPO / "data"), "--store", str(store), "-q"],
                             capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - started)
        found = re.search(r"chunks in ([0-9.]+) s", out.stdout)
        printed.append(float(found.group(1)) if found else float("nan"))
    print(f"\nre-ingest of data/ with nothing to do (`rag ingest data/`), medians of {rounds}:")
    print(f"  wall {statistics.median(walls):.2f} s (min {min(walls):.2f}); printed {statistics.median(printed):.1f} s;"
          f" last line: {out.stdout.strip().splitlines()[-1][:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", default="question,candidates,noop")
    parser.add_argument("--onnx", default=None, help="an ONNX export of the model (default: exported here)")
    args = parser.parse_args()
    from rag import privacy

    privacy.apply()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-cold-cache-"))
    print(f"machine: {machine()}")
    parts = args.parts.split(",")
    store = ensure_store(args.store, cache_dir) if {"question", "noop"} & set(parts) else None
    if "candidates" in parts:
        bench_candidates(cache_dir, args.rounds, args.onnx)
    if "question" in parts:
        bench_question(store, cache_dir, args.rounds)
    if "noop" in parts:
        bench_noop(store, cache_dir, args.rounds)


if __name__ == "__main__":
    main()
