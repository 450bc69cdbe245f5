"""The answer path against raw llama-cpp-python on the identical prompt, in the same process and run.

    python benchmarks/bench_answer.py [--model NAME] [--rounds 2] [FOLDER ...]

For each question, rag answers it (retrieval, prompt, LangChain's ChatLlamaCpp, citations) while a callback
records the exact messages sent to the model; then raw `Llama.create_chat_completion` is given those same
messages on the same loaded model with the same decoding settings. Both start from an empty KV cache (so
neither benefits from the other's prompt), in alternating order. Reported: time to first token (TTFT:
rag's counted from the moment the model is called, so retrieval is reported on its own) and generation speed
(tokens/s after the first token), with rag/raw ratios. A last section shows what llama.cpp's prefix reuse
gives rag when questions follow each other (the system prompt stays in the KV cache).

Prints figures; never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from rag import RAG

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What is CRAN?",
    "How can R be installed on Windows?",
    "How do I decrypt a PDF with pypdf?",
    "如何安装 Rust？",
]


class Recorder(BaseCallbackHandler):
    """Remembers the messages of the last chat-model call and when it started and streamed its first token."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.started = self.first = 0.0
        self.tokens = 0

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        self.messages = messages[0]
        self.started, self.first, self.tokens = time.perf_counter(), 0.0, 0

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        if token:
            self.tokens += 1
            self.first = self.first or time.perf_counter()


def as_dicts(messages: list[Any]) -> list[dict[str, str]]:
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": roles[m.type], "content": m.content} for m in messages]


def run_rag(rag: RAG, question: str) -> dict[str, float]:
    rec = Recorder()
    rag.llm.client.reset()  # empty KV cache: no prefix left over from the previous call
    t0 = time.perf_counter()
    last = None
    for last in rag.chain.stream(question, config={"callbacks": [rec]}):
        pass
    end = time.perf_counter()
    ttft = (rec.first or end) - rec.started
    gen = rec.tokens - 1
    return {"before_model": rec.started - t0, "ttft": ttft, "tok_s": gen / max(end - rec.first, 1e-9) if gen > 0 else 0.0,
            "tokens": rec.tokens, "messages": rec.messages, "end_after_model": end}


def run_raw(llama: Any, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, float]:
    llama.reset()
    t0 = time.perf_counter()
    first, tokens = 0.0, 0
    for chunk in llama.create_chat_completion(messages=messages, stream=True, **params):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    return {"ttft": (first or end) - t0, "tok_s": (tokens - 1) / max(end - first, 1e-9) if tokens > 1 else 0.0, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", default=[str(REPO / "data")])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        rag = RAG(store=Path(tmp) / "store", model=args.model, max_tokens=args.max_tokens)
        rag.ingest(*args.folders)
        t = time.perf_counter()
        llama = rag.llm.client
        print(f"model {args.model}: load {time.perf_counter() - t:.1f} s; n_ctx {rag.settings.n_ctx}, "
              f"threads {llama.context_params.n_threads}, n_batch {llama.n_batch}, max_tokens {args.max_tokens}")
        # The decoding settings rag's ChatLlamaCpp sends, so that raw decodes the same tokens.
        params = {"temperature": rag.settings.temperature, "max_tokens": args.max_tokens, "repeat_penalty": 1.05,
                  "seed": rag.settings.seed, "top_p": rag.llm.top_p, "top_k": rag.llm.top_k}
        rag.chain.invoke("warm-up question about R")  # first-call costs (BM25 load, graph allocation) out of the way

        rows = []
        for r in range(args.rounds):
            for q in QUESTIONS:
                t0 = time.perf_counter()
                rag.retriever.invoke(q)
                retrieval = time.perf_counter() - t0
                if r % 2 == 0:
                    ours = run_rag(rag, q)
                    raw = run_raw(llama, as_dicts(ours["messages"]), params)
                else:  # alternate the order, so that neither side always runs on a warmer machine
                    probe = run_rag(rag, q)  # only to learn the messages; timed again below, after raw
                    raw = run_raw(llama, as_dicts(probe["messages"]), params)
                    ours = run_rag(rag, q)
                rows.append((retrieval, ours, raw))
                print(f"  round {r + 1} {q!r}: retrieval {retrieval * 1000:.0f} ms; TTFT rag {ours['ttft']:.2f} s, raw "
                      f"{raw['ttft']:.2f} s; generation rag {ours['tok_s']:.1f} tok/s, raw {raw['tok_s']:.1f} tok/s "
                      f"({ours['tokens']} / {raw['tokens']} tokens)")

        med = statistics.median
        ttft_ratio = med(o["ttft"] / w["ttft"] for _, o, w in rows)
        gen_ratio = med(o["tok_s"] / w["tok_s"] for _, o, w in rows if w["tok_s"] and o["tok_s"])
        print(f"median retrieval {med(r for r, _, _ in rows) * 1000:.0f} ms; median TTFT rag {med(o['ttft'] for _, o, _ in rows):.2f} s, "
              f"raw {med(w['ttft'] for _, _, w in rows):.2f} s; median generation rag {med(o['tok_s'] for _, o, _ in rows):.1f} tok/s, "
              f"raw {med(w['tok_s'] for _, _, w in rows):.1f} tok/s")
        print(f"ratios (median of per-question ratios): TTFT rag/raw {ttft_ratio:.3f} (target <= 1.1), "
              f"generation rag/raw {gen_ratio:.3f} (target >= 0.95)")

        # Prefix reuse: consecutive questions, no reset: the system prompt's tokens stay in the KV cache.
        cold, warm = [], []
        for q in QUESTIONS:
            cold.append(run_rag(rag, q)["ttft"])
            rec = Recorder()
            rag.chain.invoke("warm-up question about R")
            for _ in rag.chain.stream(q, config={"callbacks": [rec]}):
                pass
            warm.append((rec.first or time.perf_counter()) - rec.started)
        print(f"KV-cache prefix reuse (system prompt kept between questions): median TTFT {med(warm):.2f} s vs "
              f"{med(cold):.2f} s from an empty cache ({med(warm) / med(cold):.2f}x)")


if __name__ == "__main__":
    main()
