"""Evaluation: how well `rag` retrieves and answers, measured on standard benchmark files.

Retrieval (`evaluate_retrieval`): a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), or a
question-answering file (CMRC2018, SQuAD) turned into a retrieval set (each passage a document, each question a
query whose relevant document is its own passage). The corpus goes into a store through the normal ingest path
(one `.txt` file per document under `<store>/eval-docs/`), every query is asked of the normal retriever
(`RAG.retriever`), chunk hits are rolled up to documents (a document ranks where its best chunk ranks) and the
run is scored with `ranx` (nDCG@10, Recall@10, Recall@100, MRR@10, hit@1).

Answering (`evaluate_qa`): question files (JSONL `{"question", "answers"}`, SQuAD JSON, CMRC2018 JSON) asked of
`RAG.chain` as a stream, so that retrieval, first-token and total latency are timed; an answer is right when it
contains a reference answer after `normalize_answer`, and a question without answers is right when refused.

Everything here is pure functions and small classes over a `RAG`; the `rag eval` commands (rag/eval_cli.py) are a
thin shell over them. Heavy libraries (ranx, the models) are imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rag.config import ConfigError
from rag.lang import HAN, KANA_HANGUL

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.documents import Document

    from rag.api import RAG

#: Reported for every retrieval run; the names are ranx's except hit@1 (ranx: hit_rate@1 = precision@1 = MRR@1
#: when each query has one relevant document).
RETRIEVAL_METRICS: dict[str, str] = {
    "ndcg@10": "ndcg@10",
    "recall@10": "recall@10",
    "recall@100": "recall@100",
    "mrr@10": "mrr@10",
    "hit@1": "hit_rate@1",
}
#: Documents kept per query after rolling chunks up (Recall@100 needs 100).
DEPTH = 100
#: Chunks asked of the retriever per query. Documents split into ~3 chunks (SciFact abstracts: 3.1) need about
#: 3x DEPTH chunks to fill 100 documents; 100 chunks gave only ~69 distinct documents per SciFact query.
CHUNKS = 300
#: Folder inside the store where corpus documents are written before ingesting them.
DOCS_FOLDER = "eval-docs"
#: Folder inside the store where QA contexts are written by `--ingest-contexts`.
CONTEXTS_FOLDER = "eval-contexts"

Progress = Callable[[int], None]


# --- data sets ------------------------------------------------------------------------------------------


@dataclass
class RetrievalSet:
    """A retrieval benchmark: documents (id -> (title, text)), queries (id -> text), relevance judgements
    (query id -> {document id: grade}). Only queries with at least one judgement are kept."""

    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def limited(self, n: int | None) -> RetrievalSet:
        """The first `n` queries (file order), or all when n is None."""
        if n is None or n >= len(self.queries):
            return self
        keep = list(self.queries)[:n]
        return RetrievalSet(self.name, self.corpus, {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep})


@dataclass
class QAItem:
    """One question; `answers` empty means unanswerable (the right outcome is a refusal). `context` is the
    passage the question was written on, when the file has one (SQuAD, CMRC)."""

    id: str
    question: str
    answers: list[str]
    context_id: str | None = None
    context: str | None = None
    title: str = ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{lineno}: not a JSON object ({exc})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{lineno}: not a JSON object")
            yield lineno, obj


def _answer_text(value: Any) -> str:
    # CMRC2018 has a few answers stored as numbers (147.0 for "147"); keep them as the text they stand for.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):  # SQuAD: {"text": ..., "answer_start": ...}
        value = value.get("text", "")
    return str(value).strip()


def _answers(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for v in values or []:
        text = _answer_text(v)
        if text:
            seen[text] = None
    return list(seen)


def read_jsonl_qa(path: Path) -> list[QAItem]:
    """JSONL, one `{"question": str, "answers": [str, ...]}` per line (optional "id", "context", "context_id",
    "title"); an empty `answers` list marks an unanswerable question."""
    items: list[QAItem] = []
    for lineno, obj in _jsonl(path):
        question, answers = obj.get("question"), obj.get("answers")
        if not isinstance(question, str) or not question.strip() or not isinstance(answers, list):
            raise ConfigError(f"{path}:{lineno}: expected {{\"question\": str, \"answers\": [str, ...]}}")
        context = obj.get("context")
        cid = obj.get("context_id")
        if context is not None and cid is None:
            cid = "ctx-" + hashlib.sha1(str(context).encode()).hexdigest()[:12]
        items.append(QAItem(str(obj.get("id", lineno)), question.strip(), _answers(answers),
                            None if cid is None else str(cid), context, str(obj.get("title") or "")))
    return items


def read_squad(data: Any, path: Path) -> list[QAItem]:
    """SQuAD 1.1 / 2.0 JSON: data[].paragraphs[].qas[]; `is_impossible` questions have no answers."""
    items: list[QAItem] = []
    try:
        for a, article in enumerate(data["data"]):
            title = str(article.get("title") or "")
            for p, para in enumerate(article["paragraphs"]):
                cid = f"{a}-{p}"
                for qa in para["qas"]:
                    answers = [] if qa.get("is_impossible") else _answers(qa.get("answers"))
                    items.append(QAItem(str(qa.get("id", f"{cid}-{len(items)}")), str(qa["question"]).strip(), answers,
                                        cid, str(para["context"]), title))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a SQuAD file (missing {exc})") from None
    return items


def read_cmrc(data: Any, path: Path) -> list[QAItem]:
    """CMRC2018 JSON: a list of {context_id, context_text, title, qas: [{query_id, query_text, answers}]}."""
    items: list[QAItem] = []
    try:
        for entry in data:
            cid = str(entry["context_id"])
            for qa in entry["qas"]:
                items.append(QAItem(str(qa["query_id"]), str(qa["query_text"]).strip(), _answers(qa.get("answers")),
                                    cid, str(entry["context_text"]), str(entry.get("title") or "")))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a CMRC2018 file (missing {exc})") from None
    return items


def detect_format(path: Path) -> str:
    """'beir' (a folder), 'jsonl', 'squad' or 'cmrc', by content; ConfigError for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file():
            return "beir"
        raise ConfigError(f"{path}: not a BEIR folder (needs corpus.jsonl, queries.jsonl and qrels/)")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    try:
        with path.open(encoding="utf-8-sig") as fh:
            head = fh.read(4096).lstrip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as text ({exc})") from None
    if head.startswith("["):
        data = _read_json(path)
        if isinstance(data, list) and data and isinstance(data[0], dict) and {"context_text", "qas"} <= data[0].keys():
            return "cmrc"
    elif head.startswith("{"):
        first = head.splitlines()[0]
        try:
            obj = json.loads(first)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "question" in obj:
            return "jsonl"
        if obj is None or "data" in obj:
            data = _read_json(path)
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                return "squad"
    raise ConfigError(f"{path}: unknown format (expected JSONL questions, SQuAD JSON or CMRC2018 JSON)")


def load_qa(path: Path | str) -> list[QAItem]:
    """Questions from a JSONL, SQuAD or CMRC2018 file (detected by content)."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "beir":
        raise ConfigError(f"{path}: a BEIR folder has no answers; use `rag eval retrieval`")
    items = read_jsonl_qa(path) if kind == "jsonl" else (read_squad if kind == "squad" else read_cmrc)(_read_json(path), path)
    if not items:
        raise ConfigError(f"{path}: no questions found")
    return items


def _beir_split(folder: Path, split: str | None) -> Path:
    qrels = folder / "qrels"
    found = sorted(p.stem for p in qrels.glob("*.tsv")) if qrels.is_dir() else []
    if not found:
        raise ConfigError(f"{folder}: no qrels/<split>.tsv files")
    if split is None:
        split = found[0] if len(found) == 1 else "test" if "test" in found else None
        if split is None:
            raise ConfigError(f"{folder}: several splits ({', '.join(found)}); choose one with --split")
    if split not in found:
        raise ConfigError(f"{folder}: no split {split!r} (found: {', '.join(found)})")
    return qrels / f"{split}.tsv"


def load_beir(folder: Path | str, split: str | None = None) -> RetrievalSet:
    """A BEIR folder. `split` defaults to the only qrels file, else `test`."""
    folder = Path(folder)
    qrels_path = _beir_split(folder, split)
    corpus: dict[str, tuple[str, str]] = {}
    for lineno, obj in _jsonl(folder / "corpus.jsonl"):
        if "_id" not in obj:
            raise ConfigError(f"{folder / 'corpus.jsonl'}:{lineno}: no _id")
        corpus[str(obj["_id"])] = (str(obj.get("title") or ""), str(obj.get("text") or ""))
    texts: dict[str, str] = {}
    for lineno, obj in _jsonl(folder / "queries.jsonl"):
        if "_id" not in obj or "text" not in obj:
            raise ConfigError(f"{folder / 'queries.jsonl'}:{lineno}: needs _id and text")
        texts[str(obj["_id"])] = str(obj["text"])
    qrels: dict[str, dict[str, int]] = {}
    try:
        lines = qrels_path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ConfigError(f"{qrels_path}: cannot read ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not line.strip() or (lineno == 1 and parts[0] == "query-id"):
            continue
        if len(parts) < 3:
            raise ConfigError(f"{qrels_path}:{lineno}: expected query-id, corpus-id, score")
        try:
            grade = int(float(parts[2]))
        except ValueError:
            raise ConfigError(f"{qrels_path}:{lineno}: score {parts[2]!r} is not a number") from None
        if grade > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    # Queries in file order, only those with a judgement in this split (as BEIR evaluates).
    queries = {q: t for q, t in texts.items() if q in qrels}
    if not queries:
        raise ConfigError(f"{folder}: no query of queries.jsonl has a judgement in {qrels_path.name}")
    return RetrievalSet(f"{folder.name} ({qrels_path.stem})", corpus, queries, {q: qrels[q] for q in queries})


def retrieval_set_from_qa(items: Sequence[QAItem], name: str) -> RetrievalSet:
    """Each passage a document, each question a query whose one relevant document is its own passage."""
    corpus: dict[str, tuple[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for item in items:
        if item.context_id is None or not item.context:
            continue
        corpus.setdefault(item.context_id, (item.title, item.context))
        qid = item.id if item.id not in queries else f"{item.id}#{len(queries)}"
        queries[qid] = item.question
        qrels[qid] = {item.context_id: 1}
    if not queries:
        raise ConfigError(f"{name}: no question comes with its passage")
    return RetrievalSet(name, corpus, queries, qrels)


def load_retrieval_set(path: Path | str, split: str | None = None) -> RetrievalSet:
    """A BEIR folder, or a CMRC2018 / SQuAD / JSONL-with-contexts file made into a retrieval set."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "beir":
        return load_beir(path, split)
    if split is not None:
        raise ConfigError(f"{path}: --split applies to BEIR folders only")
    return retrieval_set_from_qa(load_qa(path), path.name)


# --- writing documents for the normal ingest path ---------------------------------------------------------


def doc_filename(doc_id: str) -> str:
    """A safe, reversible-through-a-map file name for a document id ('.txt')."""
    name = quote(doc_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]  # a leading dot would make ingest skip it as hidden
    if not name or len(name.encode()) > 200:
        name = "id-" + hashlib.sha1(doc_id.encode()).hexdigest()
    return name + ".txt"


def document_text(title: str, text: str) -> str:
    """Title, a blank line, text (just the text when there is no title)."""
    title, text = title.strip(), text.strip()
    return f"{title}\n\n{text}" if title and text else title or text


def write_documents(docs: Mapping[str, tuple[str, str]], folder: Path) -> dict[str, str]:
    """Write each document as `<folder>/<id>.txt` (rewriting only files whose content changed, so a re-run
    ingests nothing) and delete other `.txt` files there. Returns resolved path -> document id for every
    written file; documents with no text at all are not written (they could never be retrieved)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    written: dict[str, str] = {}
    for doc_id, (title, text) in docs.items():
        body = document_text(title, text)
        if not body:
            continue
        path = folder / doc_filename(doc_id)
        data = body.encode("utf-8")
        try:
            same = path.read_bytes() == data
        except OSError:
            same = False
        if not same:
            path.write_bytes(data)
        written[str(path)] = doc_id
    for stale in folder.glob("*.txt"):
        if str(stale) not in written:
            stale.unlink()
    return written


def ingest_documents(rag: RAG, docs: Mapping[str, tuple[str, str]], folder_name: str = DOCS_FOLDER,
                     progress: Callable[[str, object], None] | None = None, exclusive: bool = True) -> tuple[dict[str, str], Any]:
    """Write `docs` under `<store>/<folder_name>/` and ingest that folder into `rag`'s store (incremental; files
    removed from the folder are pruned). With `exclusive`, a store that holds other files is refused, so an
    evaluation never mixes benchmark documents with a user's own. Returns (path -> id, IngestReport)."""
    folder = (Path(rag.settings.store) / folder_name).resolve()
    if exclusive:
        others = [r.source for r in rag.files() if not r.source.startswith(str(folder) + "/")]
        if others:
            raise ConfigError(f"{rag.settings.store}: the store holds {len(others)} other file(s) "
                              f"(e.g. {others[0]}); evaluate in a store of its own")
    id_of = write_documents(docs, folder)
    report = rag.ingest(folder, prune=True, progress=progress)
    return id_of, report


# --- scoring ---------------------------------------------------------------------------------------------


def roll_up(docs: Sequence[Document], id_of: Mapping[str, str], depth: int = DEPTH) -> dict[str, float]:
    """Chunk hits (best first) -> document id -> score, where a document ranks at its best chunk (first
    occurrence) and scores decrease with rank. Chunks of files outside `id_of` are ignored."""
    ranked: dict[str, float] = {}
    for doc in docs:
        doc_id = id_of.get(str(doc.metadata.get("source", "")))
        if doc_id is None or doc_id in ranked:
            continue
        ranked[doc_id] = float(depth - len(ranked))
        if len(ranked) >= depth:
            break
    return ranked


def score_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
              metrics: Mapping[str, str] = RETRIEVAL_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score a run with ranx. `metrics` maps our names to ranx's. Queries missing from the run count as
    retrieving nothing; run entries without judgements are ignored. Returns (means, per-query scores)."""
    from ranx import Qrels, Run, evaluate

    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    if not qrels:
        raise ValueError("no query has a relevance judgement")
    # ranx cannot hold an empty result list; a query that found nothing is simply left out of the run, and
    # make_comparable then scores it as 0.
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels and docs}
    if not run:  # nothing found for any query (ranx cannot build an empty run)
        return {name: 0.0 for name in metrics}, {q: {name: 0.0 for name in metrics} for q in qrels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's "unsafe cast" warnings inside ranx's compiled metrics
        r = Run(run)
        means = evaluate(Qrels(qrels), r, list(metrics.values()), make_comparable=True, threads=1)
    if len(metrics) == 1:
        means = {next(iter(metrics.values())): means}
    out = {name: float(means[m]) for name, m in metrics.items()}
    per_query: dict[str, dict[str, float]] = {q: {} for q in qrels}
    for name, m in metrics.items():
        for q, value in r.scores.get(m, {}).items():
            per_query[q][name] = float(value)
    return out, per_query


# --- retrieval evaluation ---------------------------------------------------------------------------------


@dataclass
class RetrievalReport:
    """The outcome of one retrieval evaluation (see `to_dict`)."""

    dataset: str
    mode: str
    queries: int
    documents: int
    chunks: int
    k: int
    metrics: dict[str, float]
    ingest_seconds: float
    query_seconds: float
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    run: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d.pop("run")
        if not per_query:
            d.pop("per_query")
        d["ms_per_query"] = round(1000 * self.query_seconds / max(self.queries, 1), 1)
        d["metrics"] = {k: round(v, 4) for k, v in self.metrics.items()}
        d["ingest_seconds"], d["query_seconds"] = round(self.ingest_seconds, 1), round(self.query_seconds, 1)
        return d


def retrieve_run(retriever: Any, queries: Mapping[str, str], id_of: Mapping[str, str], k: int, depth: int = DEPTH,
                 progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Ask `retriever` (a LangChain retriever) for `k` chunks per query; roll them up to documents."""
    run: dict[str, dict[str, float]] = {}
    for qid, text in queries.items():
        docs = retriever.invoke(text, k=k)
        run[qid] = roll_up(docs, id_of, depth)
        if progress:
            progress(1)
    return run


def prepare_store(rag: RAG, data: RetrievalSet,
                  progress: Callable[[str, object], None] | None = None) -> tuple[dict[str, str], float]:
    """Ingest `data.corpus` into `rag`'s store (incremental: a built store is reused as is). Returns
    (resolved file path -> document id, seconds)."""
    t = time.perf_counter()
    id_of, report = ingest_documents(rag, data.corpus, progress=progress)
    if report.failed:
        raise ConfigError(f"{len(report.failed)} document(s) could not be ingested, e.g. {report.failed[0]}")
    return id_of, time.perf_counter() - t


def run_queries(rag: RAG, data: RetrievalSet, id_of: Mapping[str, str], ingest_seconds: float = 0.0,
                progress: Progress | None = None, depth: int = DEPTH) -> RetrievalReport:
    """Ask `rag.retriever` every query for `rag.settings.k` chunks, roll up to documents and score."""
    rag.retriever.invoke(next(iter(data.queries.values())))  # loads the BM25 index and warms the model: not timed
    t = time.perf_counter()
    run = retrieve_run(rag.retriever, data.queries, id_of, rag.settings.k, depth, progress)
    query_seconds = time.perf_counter() - t
    means, per_query = score_run(data.qrels, run)
    return RetrievalReport(data.name, rag.settings.retrieval, len(data.queries), len(id_of), rag.store.count(),
                           rag.settings.k, means, ingest_seconds, query_seconds, per_query, run)


def evaluate_retrieval(rag: RAG, data: RetrievalSet, *, ingest_progress: Callable[[str, object], None] | None = None,
                       progress: Progress | None = None, depth: int = DEPTH) -> RetrievalReport:
    """`prepare_store` then `run_queries`: the retrieval mode and k (chunks per query) come from `rag.settings`."""
    id_of, ingest_seconds = prepare_store(rag, data, ingest_progress)
    return run_queries(rag, data, id_of, ingest_seconds, progress, depth)


# --- answer evaluation ------------------------------------------------------------------------------------

_CJK = re.compile(f"[{HAN}{KANA_HANGUL}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case; full-width forms folded (NFKC); punctuation removed (ASCII and CJK: 。，《》“” ...); English
    articles dropped (as SQuAD's scorer does); whitespace collapsed; and, when the text has Chinese (or other
    CJK) characters, no spaces at all, since Chinese does not separate words."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = "".join("" if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = " ".join(_ARTICLES.sub(" ", text).split())
    return text.replace(" ", "") if _CJK.search(text) else text


def contains_answer(answer: str, references: Iterable[str]) -> bool:
    """True when the normalised answer contains a normalised reference (as whole words for non-CJK references;
    as a plain substring, spaces removed, when either side has CJK characters)."""
    got = normalize_answer(answer)
    for ref in references:
        want = normalize_answer(ref)
        if not want:
            continue
        if _CJK.search(want) or _CJK.search(got):
            if want.replace(" ", "") in got.replace(" ", ""):
                return True
        elif f" {want} " in f" {got} ":
            return True
    return False


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class QAResult:
    """One question asked: the answer, whether it counts as right (contains a reference answer; for a question
    without answers: refused), and its timings in seconds from the question to the retrieved passages, to the
    first answer token, and to the end."""

    id: str
    question: str
    answers: list[str]
    answer: str
    refused: bool
    correct: bool
    retrieval: float
    first_token: float
    total: float


@dataclass
class QAReport:
    """Scores over a set of questions (see `to_dict`)."""

    dataset: str
    model: str
    results: list[QAResult]

    @property
    def answerable(self) -> list[QAResult]:
        return [r for r in self.results if r.answers]

    @property
    def unanswerable(self) -> list[QAResult]:
        return [r for r in self.results if not r.answers]

    def to_dict(self, per_question: bool = False) -> dict[str, Any]:
        def share(rows: list[QAResult], pred: Callable[[QAResult], bool]) -> float | None:
            return round(sum(map(pred, rows)) / len(rows), 4) if rows else None

        answerable, unanswerable = self.answerable, self.unanswerable
        d: dict[str, Any] = {
            "dataset": self.dataset,
            "model": self.model,
            "questions": len(self.results),
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "answer_contains_reference": share(answerable, lambda r: r.correct),
            "false_refusals": share(answerable, lambda r: r.refused),
            "correct_refusals": share(unanswerable, lambda r: r.refused),
            "latency_seconds": {
                part: {f"p{p}": round(percentile([getattr(r, part) for r in self.results], p), 3) for p in (50, 90)}
                for part in ("retrieval", "first_token", "total")
            },
        }
        if per_question:
            d["per_question"] = [asdict(r) for r in self.results]
        return d


def ask_timed(rag: RAG, question: str) -> tuple[Any, float, float, float]:
    """Stream one question through `rag.chain`: (Answer, seconds to the retrieved sources, to the first
    answer token, to the end)."""
    from rag.answer.chain import answer_from_output

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    t_sources = t_first = None
    for chunk in rag.chain.stream({"question": question, "chat_history": []}):
        now = time.perf_counter()
        for key, value in chunk.items():
            if key == "answer":
                if t_first is None and value:
                    t_first = now
                out["answer"] = out.get("answer", "") + value
            else:
                if key == "sources" and t_sources is None:
                    t_sources = now
                out[key] = value
    total = time.perf_counter() - t0
    retrieval = (t_sources - t0) if t_sources is not None else total
    first = (t_first - t0) if t_first is not None else total
    return answer_from_output(out), retrieval, first, total


def ingest_contexts(rag: RAG, items: Sequence[QAItem]) -> Any:
    """Write the questions' passages as files under `<store>/eval-contexts/` and ingest them (normal path)."""
    docs = {i.context_id: (i.title, i.context) for i in items if i.context_id is not None and i.context}
    if not docs:
        raise ConfigError("the questions come without passages: nothing to ingest (--ingest-contexts needs SQuAD, "
                          "CMRC2018, or JSONL with a \"context\" field)")
    _, report = ingest_documents(rag, docs, CONTEXTS_FOLDER, exclusive=False)
    return report


def evaluate_qa(rag: RAG, items: Sequence[QAItem], name: str = "", progress: Progress | None = None) -> QAReport:
    """Ask every question (fresh, no history) and score the answers. The chat model, the embedder and the
    BM25 index are loaded before the first timed question."""
    if rag.store.count() == 0:
        raise ConfigError(f"{rag.settings.store}: the store is empty; ingest documents first (or use --ingest-contexts)")
    rag.chain  # noqa: B018  loads the chat model
    rag.retriever.invoke(items[0].question)  # loads the embedder and the BM25 index
    results: list[QAResult] = []
    for item in items:
        answer, retrieval, first, total = ask_timed(rag, item.question)
        # Right: a reference answer in the text, or a refusal when the question has no answer.
        correct = (not answer.refused and contains_answer(answer.text, item.answers)) if item.answers else answer.refused
        results.append(QAResult(item.id, item.question, item.answers, answer.text, answer.refused, correct,
                                retrieval, first, total))
        if progress:
            progress(1)
    return QAReport(name, rag.settings.model, results)
