"""Load on `rag serve`: N questions sent at once (streaming, over loopback) against the same questions asked one by
one in process, in the same run; prints throughput, latency and time-to-first-token percentiles and their ratios.

    python benchmarks/bench_serve.py [-n 8] [--model smollm2-135m] [--max-tokens 64] [--store DIR]

One model answers one request at a time, so N concurrent requests cannot beat N sequential ones; what this
measures is what the server costs on top (HTTP, SSE, queueing) and how the waiting is shared out.
Never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rag import RAG

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What is CRAN?",
    "Who originally wrote R?",
    "How can R be installed on Windows?",
    "How do I decrypt a PDF with pypdf?",
    "What are the R mailing lists?",
    "Can I use R for commercial purposes?",
    "如何安装 Rust？",
    "What is the R Foundation?",
]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(name: str, wall: float, latencies: list[float], firsts: list[float]) -> dict[str, float]:
    s = {"throughput": len(latencies) / wall, "p50": pct(latencies, 50), "p90": pct(latencies, 90), "max": max(latencies),
         "ttft50": pct(firsts, 50), "ttft90": pct(firsts, 90)}
    print(f"{name:<28} {len(latencies):3d} answers in {wall:6.1f} s = {s['throughput']:.3f} answers/s | latency p50 "
          f"{s['p50']:5.1f} s, p90 {s['p90']:5.1f} s, max {s['max']:5.1f} s | first token p50 {s['ttft50']:5.1f} s, "
          f"p90 {s['ttft90']:5.1f} s")
    return s


def in_process(rag: RAG, questions: list[str]) -> tuple[float, list[float], list[float], list[str]]:
    latencies, firsts, answers = [], [], []
    start = time.perf_counter()
    for q in questions:
        t = time.perf_counter()
        first = None
        for item in rag.stream(q):
            if isinstance(item, str):
                first = first or time.perf_counter() - t
            else:
                answers.append(item.text)
        latencies.append(time.perf_counter() - t)
        firsts.append(first or latencies[-1])
    return time.perf_counter() - start, latencies, firsts, answers


async def one(client: httpx.AsyncClient, url: str, question: str) -> tuple[float, float, str]:
    t = time.perf_counter()
    first, pieces = None, []
    body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": question}]}
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter() - t
                pieces.append(delta)
    total = time.perf_counter() - t
    return total, first or total, "".join(pieces).strip()


async def concurrent(url: str, questions: list[str]) -> tuple[float, list[float], list[float], list[str]]:
    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=len(questions))) as client:
        await one(client, url, "What is CRAN?")  # warm-up: connection, BM25 index, model caches
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, q) for q in questions))
        wall = time.perf_counter() - start
    return wall, [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=8, help="concurrent questions (default 8)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--store", type=Path, default=None, help="an ingested store (default: data/ ingested into a temporary one)")
    args = ap.parse_args()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; model {args.model}, "
          f"max_tokens {args.max_tokens}, {args.n} questions")

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        rag = RAG(store=store, model=args.model, max_tokens=args.max_tokens)
        if args.store is None:
            rag.ingest(REPO / "data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        cmd = [str(Path(sys.executable).with_name("rag")), "serve", "--port", "0", "--store", str(store), "--model", args.model,
               "--max-tokens", str(args.max_tokens)]
        server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "rag serve:" not in line and server.poll() is None:
                line = server.stderr.readline()
            url = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)

            rag.ask("What is CRAN?")  # warm-up, as for the server
            seq = in_process(rag, questions)
            base = summary("one by one, in process", seq[0], seq[1], seq[2])
            con = asyncio.run(concurrent(url, questions))
            served = summary(f"{args.n} at once, rag serve", con[0], con[1], con[2])
        finally:
            server.terminate()
            server.wait(timeout=60)

    same = sum(a == b for a, b in zip(seq[3], con[3]))
    print(f"throughput ratio (served / in process): {served['throughput'] / base['throughput']:.2f}")
    print(f"latency p50 ratio: {served['p50'] / base['p50']:.2f}; first token p50 ratio: {served['ttft50'] / base['ttft50']:.2f} "
          f"(queueing: the k-th request waits for k-1 answers)")
    print(f"answers identical to the in-process ones: {same}/{len(questions)}")


if __name__ == "__main__":
    main()
