"""Embedding throughput of the local backends and the alternatives measured against them, all compared with
sentence-transformers' own float32 `encode` of the same chunks, in one process, in interleaved rounds; and how
close the vectors are (cosine with float32).

    python benchmarks/bench_embeddings.py [PDF_OR_TEXT ...] [--chunks N] [--rounds R] [--threads T]
                                          [--variants fp32,bf16,autocast,compile,compile-frozen,onnxruntime]

Variants (every one but fp32 batches texts by token count as the bf16 backend does, so that only the way the
transformer runs differs):
  fp32            sentence-transformers `encode`, float32 (the reference every ratio is to)
  bf16            the "bf16" backend: OpenVINO, bfloat16 where the CPU has it
  autocast        the float32 model under torch.autocast("cpu", dtype=torch.bfloat16)
  compile         torch.compile (inductor) of the transformer, under the same autocast
  compile-frozen  the same with inductor's weight freezing (TORCHINDUCTOR_FREEZING=1: oneDNN weight packing)
  onnxruntime     torch.onnx.export (dynamo) of the transformer, run by onnxruntime (float32; needs onnx, onnxscript)
A variant whose package is missing is reported and left out. Setup time (load, convert, compile and a first
pass over every chunk, which also compiles each batch shape) is printed apart from the rounds.

The chunks come from the given files (default ../shared/corpus/docs/en/debian-reference.en.pdf, else the
repo's data/), split as `rag ingest` splits them. Prints figures and same-run ratios; asserts nothing. Quality
on retrieval is measured separately: `rag eval retrieval ../shared/corpus/dev/scifact --split train` with
RAG_EMBEDDING_BACKEND=torch and =bf16, each into its own --store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ingest import machine  # noqa: E402

DEFAULT = REPO.parent / "shared" / "corpus" / "docs" / "en" / "debian-reference.en.pdf"
VARIANTS = ("fp32", "bf16", "autocast", "compile", "compile-frozen", "onnxruntime")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _st(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def _torch_forward(st, frozen: bool | None):
    """A transformer forward under bfloat16 autocast: eager (frozen None) or compiled by inductor."""
    import torch

    bert = st[0].model.eval()
    if frozen is not None:  # freezing (TORCHINDUCTOR_FREEZING=1): weights become constants, prepacked for oneDNN
        bert = torch.compile(bert, options={"freezing": frozen})

    def forward(features: dict) -> dict:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = bert(**{k: features[k] for k in INPUTS if k in features})
        return {**features, "token_embeddings": out.last_hidden_state}

    return forward


def _sample(st) -> dict:
    return dict(st.tokenizer(["a sample text", "another, longer sample text to export"], padding=True, return_tensors="pt"))


def _onnx_forward(st, folder: Path):
    import numpy as np
    import onnxruntime as ort
    import torch

    path, sample = folder / "minilm.onnx", _sample(st)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(st[0].model.eval(), (), str(path), kwargs=sample, input_names=list(sample),
                      output_names=["last_hidden_state"], dynamo=True,
                      dynamic_shapes={k: {0: batch, 1: seq} for k in sample})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def forward(features: dict) -> dict:
        out = session.run(["last_hidden_state"], {k: features[k].numpy().astype(np.int64) for k in names})[0]
        return {**features, "token_embeddings": torch.from_numpy(out)}

    return forward


def build(variant: str, model_dir: Path, name: str, batch_size: int, folder: Path):
    """A callable texts -> normalised float32 vectors (numpy) for `variant`."""
    from rag.embeddings import LocalEmbeddings
    from rag.embeddings.bf16 import encode_by_tokens

    if variant in ("fp32", "bf16"):
        import numpy as np

        emb = LocalEmbeddings(model_dir, name, batch_size, backend="torch" if variant == "fp32" else "bf16",
                              cache_dir=folder)
        precision = emb.transformer.precision if emb.transformer else "f32"
        print(f"  {variant}: backend {emb.backend}, inference precision {precision}")
        return lambda texts: np.asarray(emb.embed_documents(texts))
    st = _st(model_dir)
    forward = {
        "autocast": lambda: _torch_forward(st, None),
        "compile": lambda: _torch_forward(st, False),
        "compile-frozen": lambda: _torch_forward(st, True),
        "onnxruntime": lambda: _onnx_forward(st, folder),
    }[variant]()
    return lambda texts: encode_by_tokens(st, texts, batch_size, forward)


def chunks(paths: list[Path], n: int):
    """The first `n` chunks of `paths` as `rag ingest` splits them, and the RAG they were split with."""
    from rag import RAG
    from rag.loaders import load_file

    rag = RAG(store=Path(tempfile.mkdtemp()) / "store")
    texts: list[str] = []
    for path in paths:
        texts += [c.page_content for c in rag.splitter.split(load_file(path).documents)]
    return texts[:n], rag


def setup(variants: list[str], texts: list[str], rag, folder: Path) -> tuple[dict, dict]:
    """Each variant that can run here, and its vectors of `texts` from a first, untimed pass."""
    runners, vectors = {}, {}
    for variant in variants:
        start = time.perf_counter()
        try:
            run = build(variant, rag.embedding_model_dir, rag.settings.embedding_model,
                        rag.settings.embedding_batch_size, folder)
            vectors[variant] = run(texts)  # compiles every batch shape the rounds will see
        except ImportError as exc:
            print(f"  {variant}: left out ({exc})")
            continue
        runners[variant] = run
        print(f"  {variant}: setup and first pass {time.perf_counter() - start:.1f} s")
    return runners, vectors


def rounds(runners: dict, texts: list[str], n: int) -> tuple[dict, dict]:
    """Chunks/s per variant and round; each round runs every variant once, starting one further along, so that
    a slow spell of the shared machine does not fall on one variant."""
    import numpy as np

    names = list(runners)
    rates: dict[str, list[float]] = {v: [] for v in names}
    last: dict[str, np.ndarray] = {}
    for r in range(n):
        order = names[r % len(names):] + names[: r % len(names)]
        for variant in order:
            start = time.perf_counter()
            last[variant] = runners[variant](texts)
            rates[variant].append(len(texts) / (time.perf_counter() - start))
        load = os.getloadavg()[0]
        print(f"round {r + 1} (load {load:.2f}): " + ", ".join(f"{v} {rates[v][-1]:.1f}" for v in names))
    return rates, last


def report(rates: dict, vectors: dict) -> None:
    """Median chunks/s with its spread, the ratio to float32 (median of the per-round ratios, and its range) and
    the cosine of each variant's vectors with the float32 ones."""
    base = rates["fp32"]
    print(f"{'variant':<15} {'chunks/s median (min-max)':<27} {'ratio to fp32 median (min-max)':<31} cosine mean / min")
    for variant, r in rates.items():
        ratios = [a / b for a, b in zip(r, base)]
        cos = (vectors[variant] * vectors["fp32"]).sum(axis=1)
        print(f"{variant:<15} {statistics.median(r):7.1f} ({min(r):.1f}-{max(r):.1f}){'':<9} "
              f"{statistics.median(ratios):5.2f} ({min(ratios):.2f}-{max(ratios):.2f}){'':<16} "
              f"{cos.mean():.6f} / {cos.min():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--chunks", type=int, default=640, help="chunks per round (default 640)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--variants", default="fp32,bf16", help=f"comma-separated, fp32 first; any of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if variants[0] != "fp32" or not set(variants) <= set(VARIANTS):
        ap.error(f"--variants: fp32 first, then any of {', '.join(VARIANTS)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [Path(p) for p in args.paths] or ([DEFAULT] if DEFAULT.exists() else sorted((REPO / "data").iterdir()))
    texts, rag = chunks(paths, args.chunks)
    print(f"machine: {machine()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(texts)} chunks from "
          f"{', '.join(p.name for p in paths)}; batch size {rag.settings.embedding_batch_size}")
    with tempfile.TemporaryDirectory() as folder:
        runners, vectors = setup(variants, texts, rag, Path(folder))
        rates, last = rounds(runners, texts, args.rounds)
    report(rates, last)


if __name__ == "__main__":
    main()
