"""Cold vs warm `rag ask`: the wall time of the real command, in fresh processes, answered in process
(--no-daemon), by a background server it has to start (after `rag stop`), and by a warm one; rounds interleaved,
medians and same-run ratios printed. Never asserts on time.

    python benchmarks/bench_daemon.py [--rounds 3] [--model smollm2-135m] [--max-tokens 32] [--store DIR] [--question Q] [--threads N]

Without --store it ingests data/ into a temporary store first. The servers live in a temporary cache folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("rag")
QUESTION = "What is CRAN?"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    out = subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"rag {' '.join(args)} failed: {out.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", default="32")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--threads", default=None, help="llama.cpp threads (default: rag's, the physical cores)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ragb-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CACHE_DIR=str(tmp / "c"), RAG_STORE=str(args.store or tmp / "store"), RAG_MODEL=args.model,
               RAG_MAX_TOKENS=args.max_tokens, RAG_OCR="never")
    if args.threads:
        env["RAG_N_THREADS"] = args.threads
    if args.store is None:
        timed(env, "ingest", str(REPO / "data"), "-q")
    ask = ("ask", args.question, "--json")
    times: dict[str, list[float]] = {"in process (--no-daemon)": [], "starting the server": [], "warm server": []}
    try:
        for _ in range(args.rounds):
            times["in process (--no-daemon)"].append(timed(env, *ask, "--no-daemon"))
            times["starting the server"].append(timed(env, *ask))
            times["warm server"].append(timed(env, *ask))
            timed(env, "stop")
    finally:
        subprocess.run([str(EXE), "stop", "--all"], env=env, capture_output=True)
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; load average {' '.join(load)} at the end")
    print(f"model {args.model}, {args.max_tokens} tokens at most, threads {args.threads or 'default'}, {args.rounds} rounds; "
          "wall time of `rag ask`:")
    base = statistics.median(times["in process (--no-daemon)"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<26} median {med:6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})  {med / base:.2f}x in process")


if __name__ == "__main__":
    main()
