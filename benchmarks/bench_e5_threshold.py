"""Where multilingual-e5-small's relevance threshold should sit: the best cosine among the k chunks retrieved
(hybrid, as `rag ask`) for answerable and unanswerable questions, English (dev/squad_qa: qa.jsonl against
unanswerable.jsonl) and Chinese (CMRC2018 dev part 1 passages: their questions against the Chinese half of
benchmarks/unanswerable.jsonl), and for each candidate threshold the share of answerable questions kept and of
unanswerable ones refused. Prints figures only; asserts nothing.

    python benchmarks/bench_e5_threshold.py --work /tmp/e5tune [--passages 60] [--shared ../shared] [--languages zh]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rag.api import RAG
from rag.config import Settings
from rag.retrieval.hybrid import HybridRetriever

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = [round(0.76 + 0.005 * i, 3) for i in range(21)]


def store(work: Path, name: str, files: list[Path]) -> RAG:
    settings = Settings.load(config_file=None, env={}, overrides={
        "store": work / name, "embedding_model": "multilingual-e5-small", "cache_dir": work / "cache"})
    rag = RAG(settings)
    report = rag.ingest(*files)
    print(f"{name}: {len(rag.files())} files, {report.chunks} chunks embedded now, {report.seconds:.0f} s", flush=True)
    return rag


def best_cosines(rag: RAG, questions: list[str], k: int = 4) -> list[float]:
    retriever = HybridRetriever(store=rag.store, embeddings=rag.query_embeddings, k=k)
    return [max((d.metadata["cosine"] for d in retriever.invoke(q)), default=0.0) for q in questions]


def cmrc_files(shared: Path, work: Path, passages: int) -> tuple[list[Path], list[str]]:
    data = json.loads((shared / "corpus/dev/cmrc2018/cmrc2018_dev_part1.json").read_text())[:passages]
    folder = work / "cmrc-passages"
    folder.mkdir(parents=True, exist_ok=True)
    files, questions = [], []
    for item in data:
        path = folder / f"{item['context_id']}.txt"
        path.write_text(f"{item['title']}\n\n{item['context_text']}", encoding="utf-8")
        files.append(path)
        questions.extend(q["query_text"] for q in item["qas"])
    return files, questions


def table(label: str, answerable: list[float], unanswerable: list[float]) -> None:
    print(f"\n{label}: {len(answerable)} answerable, best cosine median {statistics.median(answerable):.3f} "
          f"(min {min(answerable):.3f}); {len(unanswerable)} unanswerable, median "
          f"{statistics.median(unanswerable):.3f} (max {max(unanswerable):.3f})")
    print("threshold | answerable kept | unanswerable refused")
    for t in THRESHOLDS:
        kept = sum(c >= t for c in answerable) / len(answerable)
        refused = sum(c < t for c in unanswerable) / len(unanswerable)
        print(f"{t:.3f} | {kept:.3f} | {refused:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the stores (kept: a second run reuses them)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--passages", type=int, default=60, help="CMRC2018 passages in the Chinese store")
    ap.add_argument("--languages", default="en,zh", help="which halves to run: en, zh or en,zh")
    args = ap.parse_args(argv)
    if "en" in args.languages:
        english(args)
    if "zh" in args.languages:
        chinese(args)
    return 0


def english(args: argparse.Namespace) -> None:
    squad = args.shared / "corpus/dev/squad_qa"
    ours = [json.loads(line) for line in (ROOT / "benchmarks/unanswerable.jsonl").open(encoding="utf-8")]
    en = store(args.work, "squad", sorted((squad / "docs").glob("*.txt")))
    answerable = [json.loads(line)["question"] for line in (squad / "qa.jsonl").open(encoding="utf-8")]
    unanswerable = [json.loads(line)["question"] for line in (squad / "unanswerable.jsonl").open(encoding="utf-8")]
    unanswerable += [q["question"] for q in ours if q["id"].startswith("en")]
    table("English (squad_qa)", best_cosines(en, answerable), best_cosines(en, unanswerable))


def chinese(args: argparse.Namespace) -> None:
    ours = [json.loads(line) for line in (ROOT / "benchmarks/unanswerable.jsonl").open(encoding="utf-8")]
    files, questions = cmrc_files(args.shared, args.work, args.passages)
    zh = store(args.work, "cmrc", files)
    table(f"Chinese (CMRC2018 dev, {args.passages} passages)", best_cosines(zh, questions),
          best_cosines(zh, [q["question"] for q in ours if q["id"].startswith("zh")]))


if __name__ == "__main__":
    sys.exit(main())
