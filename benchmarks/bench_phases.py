"""Where an answer's time goes, phase by phase: the same questions cold (a new process answering in process, as
`rag ask --no-daemon`), warm (a new client process through the background server, after a first question has
started it) and raw (llama-cpp-python alone, in a new process, given the prompt rag's own prompt code builds from
the passages rag chose), printed side by side in one table with same-run ratios. Asserts nothing.

    python benchmarks/bench_phases.py [--model qwen2.5-coder-1.5b] [--max-tokens 512] [--store DIR] [QUESTION ...]

Phases (medians over the questions): start-up (interpreter), imports, embedder (the question embedder and its
first vector), store (Chroma opened), BM25 (the index loaded), retrieval (the first), connect (warm: the server's
status check), model load, first token and whole answer (from the moment the question is asked: retrieval, the
prompt read by llama.cpp, generation), prompt tokens, peak memory (the answering process: for warm the server,
the client's own beside it), and the wall time of the real `rag ask --no-daemon` command. The cold and warm
phases come from child scripts that take `rag ask`'s own steps (bench_cold.QUESTION_PHASES, the CLI's
`lifecycle.connect` and `DaemonClient.stream`). Without --store, data/ is ingested into a temporary store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_cold import QUESTION_PHASES, _env, child, ensure_store  # noqa: E402
from bench_daemon import EXE, timed  # noqa: E402
from bench_ingest import machine  # noqa: E402

QUESTIONS = ["What is CRAN?", "Who originally wrote R?", "如何安装 Rust？"]  # the README's, over data/
WARM_UP = "What does the R FAQ cover?"  # starts the background server; not counted

# Cold: `rag ask`'s path up to retrieval (bench_cold), then the model and the answer, streamed as the CLI does.
COLD_CHILD = QUESTION_PHASES + """
import resource
sys.path.insert(0, sys.argv[3])
from bench_answer import Recorder, as_dicts
from rag.answer.chain import answer_from_output
rag.llm
mark("model load")
rec, out, first = Recorder(), {}, None
start = time.perf_counter()
for chunk in rag.chain.stream({"question": sys.argv[2], "chat_history": []}, config={"callbacks": [rec]}):
    for key, value in chunk.items():
        if key == "answer":
            first = first or time.perf_counter()
            out["answer"] = out.get("answer", "") + value
        else:
            out[key] = value
end = time.perf_counter()
answer = answer_from_output(out)
llama, s = rag.llm.client, rag.settings
t.update({"first token": (first or end) - start, "whole answer": end - start, "prompt tokens": answer.prompt_tokens,
          "peak memory": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "total": process_seconds(),
          "answer": answer.text, "style": rag.answer_style, "messages": as_dicts(rec.messages),
          "context": [{"source": c.source, "page": c.page, "text": c.text} for c in answer.context],
          "model_path": str(rag.model_path),
          "load": {"n_ctx": s.n_ctx, "n_threads": llama.context_params.n_threads, "n_batch": llama.n_batch,
                   "n_gpu_layers": s.n_gpu_layers},
          "decode": {"temperature": s.temperature, "max_tokens": s.max_tokens, "repeat_penalty": 1.05, "seed": s.seed,
                     "top_p": rag.llm.top_p, "top_k": rag.llm.top_k}})
print(json.dumps(t, ensure_ascii=False))
"""

# Warm: what `rag ask` runs when a background server is warm (the CLI's imports, connect, the streamed answer).
WARM_CHILD = """
import json, resource, sys, time
from rag.cli.common import process_seconds
t = {"start-up": process_seconds()}
def mark(name):
    t[name] = process_seconds() - sum(t.values())
from rag import privacy
privacy.apply()
import rag.cli.ask
from rag.config import Settings
from rag.daemon.lifecycle import connect
mark("imports")
client = connect(Settings.load(config_file=None, env={}, overrides=json.loads(sys.argv[1])), notice=print)
server = client.status()
mark("connect")
first = answer = None
start = time.perf_counter()
for item in client.stream(sys.argv[2]):
    if isinstance(item, str):
        first = first or time.perf_counter()
    else:
        answer = item
end = time.perf_counter()
server = client.status()
t.update({"first token": (first or end) - start, "whole answer": end - start, "prompt tokens": answer.prompt_tokens,
          "peak memory": server["peak_rss_bytes"], "client memory": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "total": process_seconds(), "answer": answer.text, "model_loads": server["model_loads"],
          "context": [{"source": c.source, "page": c.page, "text": c.text} for c in answer.context]})
print(json.dumps(t, ensure_ascii=False))
"""

# Raw: llama-cpp-python alone, loaded as rag loads it, given the messages and decoding settings (JSON in argv[1]).
RAW_CHILD = """
import json, resource, sys, time
from rag.cli.common import process_seconds
t = {"start-up": process_seconds()}
def mark(name):
    t[name] = process_seconds() - sum(t.values())
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
mark("imports")
spec = json.loads(sys.argv[1])
llama = llama_cpp.Llama(model_path=spec["model_path"], rope_freq_base=0.0, rope_freq_scale=0.0, seed=spec["decode"]["seed"],
                        verbose=False, **spec["load"])
mark("model load")
first, pieces = None, []
start = time.perf_counter()
for chunk in llama.create_chat_completion(messages=spec["messages"], stream=True, **spec["decode"]):
    piece = chunk["choices"][0]["delta"].get("content")
    if piece:
        first = first or time.perf_counter()
        pieces.append(piece)
end = time.perf_counter()
def text(token):  # a special token's text, as llama-cpp-python gives it to the chat template (-1: none)
    return llama.detokenize([token], special=True).decode("utf-8", "ignore") if token != -1 else ""
template = Jinja2ChatFormatter(llama.metadata["tokenizer.chat_template"], text(llama.token_eos()), text(llama.token_bos()))
prompt = template(messages=spec["messages"]).prompt
t.update({"first token": (first or end) - start, "whole answer": end - start,
          "prompt tokens": len(llama.tokenize(prompt.encode(), add_bos=False, special=True)),
          "peak memory": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "total": process_seconds(),
          "answer": "".join(pieces)})
print(json.dumps(t, ensure_ascii=False))
"""

ROWS = ["start-up", "imports", "embedder", "store", "BM25", "retrieval", "connect", "model load", "first token",
        "whole answer", "prompt tokens", "peak memory", "client memory", "total", "`rag ask` wall"]


def raw_spec(cold: dict[str, Any], question: str) -> dict[str, Any]:
    """What the raw child needs: rag's model and settings, and the prompt rebuilt by rag's own prompt code from
    the passages rag's answer was given."""
    from rag.answer import prompts
    from rag.answer.chain import display_label

    passages = [(display_label(Path(c["source"]).name, c["page"]), c["text"]) for c in cold["context"]]
    system, user = prompts.answer_messages(cold["style"], prompts.language_of(question),
                                           prompts.format_context(passages), question)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model_path": cold["model_path"], "load": cold["load"], "decode": cold["decode"], "messages": messages}


def run_question(question: str, overrides: dict[str, Any], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    cold = child(COLD_CHILD, json.dumps(overrides), question, str(REPO / "benchmarks"))
    cold["`rag ask` wall"] = timed(env, "ask", question, "--no-daemon", "--json")
    spec = raw_spec(cold, question)
    raw = child(RAW_CHILD, json.dumps(spec))
    raw["same prompt"] = spec["messages"] == cold["messages"]
    warm = child(WARM_CHILD, json.dumps(overrides), question)
    warm["same passages"] = warm["context"] == cold["context"]
    print(f"  {question!r}: first token cold {cold['first token']:.2f} s, warm {warm['first token']:.2f} s, raw "
          f"{raw['first token']:.2f} s (warm/raw {warm['first token'] / raw['first token']:.2f}); prompt tokens "
          f"{cold['prompt tokens']}/{warm['prompt tokens']}/{raw['prompt tokens']}; raw given rag's prompt: "
          f"{raw['same prompt']}; warm saw cold's passages: {warm['same passages']}", flush=True)
    return {"cold": cold, "warm": warm, "raw": raw}


def cell(row: str, runs: list[dict[str, Any]]) -> str:
    values = [r[row] for r in runs if row in r]
    if not values:
        return "-"
    med = statistics.median(values)
    if row == "prompt tokens":
        return f"{med:.0f}"
    if row.endswith("memory"):
        return f"{med / 2**20:,.0f} MB"
    return f"{med:.2f} s" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def table(results: list[dict[str, dict[str, Any]]]) -> None:
    paths = [("cold", "cold (--no-daemon)"), ("warm", "warm (server)"), ("raw", "raw llama.cpp")]
    print(f"\n| phase (median of {len(results)} questions) | " + " | ".join(title for _, title in paths) + " |")
    print("| --- " * (len(paths) + 1) + "|")
    for row in ROWS:
        cells = [cell(row, [r[p] for r in results]) for p, _ in paths]
        if any(c != "-" for c in cells):
            print(f"| {row} | " + " | ".join(cells) + " |")
    ratios = [r["warm"]["first token"] / r["raw"]["first token"] for r in results]
    cold_ratios = [r["cold"]["first token"] / r["raw"]["first token"] for r in results]
    print(f"\nfirst token warm/raw: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}; "
          f"target <= 1.1); cold/raw: median {statistics.median(cold_ratios):.2f}")
    totals = [r["cold"]["`rag ask` wall"] / r["warm"]["total"] for r in results]
    print(f"`rag ask --no-daemon` wall / warm client's whole run: median {statistics.median(totals):.2f}x; "
          f"model loads by the server: {results[-1]['warm']['model_loads']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="*", default=QUESTIONS)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: rag's (512)")
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    from rag import privacy

    privacy.apply()
    cache_dir = Path(tempfile.mkdtemp(prefix="bph-"))  # short: it holds the server's Unix socket
    store = ensure_store(args.store, cache_dir)
    # keep_alive: the server must outlive a question's cold and raw runs, which may take minutes on a loaded machine.
    overrides: dict[str, Any] = {"store": str(store), "cache_dir": str(cache_dir), "model": args.model, "keep_alive": 7200}
    if args.max_tokens:
        overrides["max_tokens"] = args.max_tokens
    env = {**_env(), **{f"RAG_{k.upper()}": str(v) for k, v in overrides.items()}}
    print(f"machine: {machine()}")
    print(f"model {args.model}; store {store}; {len(args.questions)} questions, each cold, raw, then warm")
    try:
        child(WARM_CHILD, json.dumps(overrides), WARM_UP)  # starts the server: the warm runs are its 2nd question on
        results = [run_question(q, overrides, env) for q in args.questions]
    finally:
        subprocess.run([str(EXE), "stop", "--all"], env=env, capture_output=True)
    (cache_dir / "results.json").write_text(json.dumps(results, ensure_ascii=False))  # to re-read the runs whole
    table(results)
    print(f"\nmachine at the end: {machine()}")


if __name__ == "__main__":
    main()
