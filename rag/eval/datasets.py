"""Benchmark files read into questions (`QAItem`) and retrieval sets (`RetrievalSet`): BEIR folders, SQuAD and
CMRC2018 JSON, and JSONL questions; the format is detected by content; a bad file is a one-line ConfigError."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import ConfigError


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
