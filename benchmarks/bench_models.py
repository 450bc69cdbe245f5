"""Speed and memory of every chat model available here: the two packaged ones and the GGUF files of the models
folder (`rag models list`). Each model runs in a fresh subprocess, so load time and peak memory are its own.

    python benchmarks/bench_models.py [--models-dir DIR] [--n-ctx 4096] [--prompt-tokens 500] [--gen-tokens 128]

Per model: load time (Llama() until ready), prompt processing in tokens/s (one ~500-token prompt, in batches
of 512), generation in tokens/s (128 tokens, greedy, end-of-text ignored), and peak resident memory of the
process next to rag's estimate (rag/gguf_info.py: weights + KV cache + compute buffer + runtime). llama.cpp runs
as rag runs it (rag/llm.py): n_threads = physical cores, n_batch 512, RoPE settings from the file. The model
file is read once before its run, so load time is measured with the file in the page cache.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(path: str, n_ctx: int, prompt_tokens: int, gen_tokens: int) -> None:
    """Runs in the subprocess: load, one prompt, a generation; prints one JSON line."""
    import resource

    import llama_cpp

    from rag.models.packaged import physical_cores

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    threads = physical_cores()
    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_batch=512, rope_freq_base=0.0,
                          rope_freq_scale=0.0, verbose=False)
    load = time.perf_counter() - start

    text = (REPO / "README.md").read_text(encoding="utf-8")
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)
    while len(tokens) < prompt_tokens:
        tokens += tokens[1:]
    tokens = tokens[:prompt_tokens]

    start = time.perf_counter()
    llm.eval(tokens)
    prompt = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(gen_tokens):  # greedy, one token at a time, past any end-of-text
        token = llm.sample(temp=0.0, top_k=1, repeat_penalty=1.0)
        llm.eval([token])
    generate = time.perf_counter() - start

    print(json.dumps({
        "load_s": load, "prompt_tps": len(tokens) / prompt, "gen_tps": gen_tokens / generate,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_before": rss_before,
        "threads": threads, "prompt_tokens": len(tokens),
    }))


def models(models_dir: Path | None) -> list[tuple[str, Path]]:
    """(name, GGUF path) of the packaged models (joining the split one if needed) and the models folder."""
    from rag.config import Settings
    from rag.models.gguf import is_later_shard
    from rag.models.packaged import PACKAGED_CHAT_MODELS
    from rag.models.resolve import chat_model_path

    settings = Settings.load()
    found = []
    for name in PACKAGED_CHAT_MODELS:
        found.append((name, chat_model_path(name, settings.cache_dir)))
    folder = models_dir or getattr(settings, "models_dir", None) or Path(settings.cache_dir) / "models"
    known = {p.resolve() for _, p in found}
    for path in sorted(Path(folder).glob("*.gguf")) if Path(folder).is_dir() else []:
        if path.resolve() not in known and not is_later_shard(path):
            found.append((path.name, path))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n_ctx, args.prompt_tokens, args.gen_tokens)
        return

    from rag.models.gguf import available_memory, human_bytes, memory_problem, read_gguf
    from rag.models.packaged import ModelError

    import os

    load_before = os.getloadavg()[0]
    rows = []
    for name, path in models(args.models_dir):
        try:
            info = read_gguf(path)
        except ModelError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        problem = memory_problem(info, args.n_ctx)
        if problem:
            print(f"skipped {name}: {problem}", file=sys.stderr)
            continue
        with path.open("rb") as fh:  # into the page cache: load time without the disk
            while fh.read(16 << 20):
                pass
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(path), "--n-ctx", str(args.n_ctx),
                               "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(f"failed {name} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append((name, info, result))

    import platform

    from rag.models.packaged import physical_cores

    print(f"\n{platform.processor() or platform.machine()}, {physical_cores()} physical cores, "
          f"{human_bytes(available_memory() or 0)} available; llama-cpp-python {_llama_version()}, "
          f"n_ctx {args.n_ctx}, n_batch 512, prompt {args.prompt_tokens} tokens, {args.gen_tokens} generated; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes compete for "
          "the cores above ~0.5)\n")
    print("| model | quant | file | load | prompt tok/s | generate tok/s | peak RSS | rag's estimate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, info, r in rows:
        print(f"| {name} | {info.file_type} | {human_bytes(info.file_size)} | {r['load_s']:.2f} s | "
              f"{r['prompt_tps']:.1f} | {r['gen_tps']:.1f} | {human_bytes(r['peak_rss'])} | "
              f"{human_bytes(info.memory_bytes(args.n_ctx))} |")


def _llama_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


if __name__ == "__main__":
    main()
