"""The lexical side of retrieval: BM25 over every chunk in the store, tokenised with jieba for Chinese and by words
(Snowball-stemmed) for everything else, kept on disk beside the store as memory-mapped segments that a file's
ingest or delete updates in place (new segment, tombstones, merges), so it is never rebuilt whole for a change."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.lang import HAN as _CJK

_CJK_RUN = re.compile(f"[{_CJK}]+")
# Chinese runs, or runs of other letters and digits. The second class excludes CJK: otherwise "2018年世界杯"
# or "Python的" would be one token that jieba never sees (this alone took CMRC2018 BM25 hit@1 from 0.926 to 0.971).
_TOKEN = re.compile(f"[{_CJK}]+|[^\\W_{_CJK}]+", re.UNICODE)
# BM25 parameters: Anserini's defaults (k1 0.9, b 0.4), better than bm25s' 1.5/0.75 on SciFact fused with dense
# (nDCG@10 0.7275 vs 0.7217, benchmarks/notes/eval-findings.md).
BM25_K1, BM25_B = 0.9, 0.4
# Words so common that matching them says nothing about relevance.
_STOP = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to was were what when "
    "where which who why will with do does did can could should would you your my we our they their there these "
    "those not no yes if then than so such into about".split()
)
_CJK_STOP = frozenset("的 了 是 在 和 与 或 及 也 就 都 而 被 把 吗 呢 吧 啊 什么 怎么 如何 哪些 哪个 为什么 一个 这个 那个 这些 那些 请问 是否".split())
# A chunk with no words is indexed as this one word, as bm25s was given it: it keeps the average length, hence
# every score, what it was when bm25s built the whole index.
_EMPTY = "\u2205"
INDEX_FORMAT = 3  # 2 and earlier: one bm25s index (ids.json), rebuilt whole after any change


def _s_stem(word: str) -> str:
    """Harman's S-stemmer (plurals only): the fallback when PyStemmer is not installed."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


@functools.lru_cache(maxsize=1)
def _stemmer() -> tuple[str, Callable[[str], str]]:
    """(name, stem function): Snowball English from PyStemmer, else the S-stemmer. The name is saved with the
    index, so an index built with the other stemmer is rebuilt instead of being searched with mismatched words."""
    try:
        import Stemmer
    except ImportError:
        return "s-stemmer", functools.lru_cache(maxsize=200_000)(_s_stem)
    return "snowball-english", functools.lru_cache(maxsize=200_000)(Stemmer.Stemmer("english").stemWord)


def tokenizer_name() -> str:
    """Identifies the tokeniser (its version and stemmer); part of the saved index."""
    return f"{TOKENIZER_VERSION}+{_stemmer()[0]}+bm25-{BM25_K1}-{BM25_B}"


TOKENIZER_VERSION = "2"


def tokenize(text: str) -> list[str]:
    """Lower-cased words, English stop words dropped, stemmed (Snowball); Chinese runs cut into words by jieba
    (search mode, for recall)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces building its dictionary on stderr otherwise
    stem = _stemmer()[1]
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        tok = match.group()
        if _CJK_RUN.fullmatch(tok):
            tokens.extend(t for t in jieba.lcut_for_search(tok) if t.strip() and t not in _CJK_STOP)
        elif tok not in _STOP:
            tokens.append(stem(tok))
    return tokens


# --- segments: immutable postings of some chunks, memory-mapped ---------------------------------------------------
@dataclass
class _Postings:
    """The arrays of one segment. Words are sorted (code point order, which is UTF-8 byte order) and joined by
    newlines, which no word contains; `indptr` gives each word's run of (doc, tf) pairs, docs ascending."""

    words: np.ndarray  # uint8: the sorted words, UTF-8, newline-separated
    word_starts: np.ndarray  # int64, len(words)+1: where each word starts in `words` (one past the last newline)
    indptr: np.ndarray  # int64
    docs: np.ndarray  # int32
    tfs: np.ndarray  # int32
    lengths: np.ndarray  # int32: words per chunk
    ids: np.ndarray  # str: chunk ids
    group_of: np.ndarray  # int32: index into `groups`
    groups: list[str]  # what is removed together (the store: one source file)


_ARRAYS = ("words", "word_starts", "indptr", "docs", "tfs", "lengths", "ids", "group_of")


def _postings(word_ids: np.ndarray, doc_of: np.ndarray, tf: np.ndarray | None, words: list[str], n_docs: int,
              ids: np.ndarray, group_of: np.ndarray, groups: list[str], lengths: np.ndarray) -> _Postings:
    """Postings from one entry per (word id, doc) occurrence, tf summed; words that occur nowhere are dropped."""
    if not np.bincount(word_ids, minlength=len(words)).all():
        used, word_ids = np.unique(word_ids, return_inverse=True)
        words = [words[i] for i in used]
    order = sorted(range(len(words)), key=words.__getitem__)
    rank = np.empty(len(words), dtype=np.int64)
    rank[order] = np.arange(len(words))
    keys, inverse = np.unique(rank[word_ids] * n_docs + doc_of, return_inverse=True)
    tfs = np.bincount(inverse, weights=tf, minlength=len(keys)).astype(np.int32)
    sorted_words = [words[i] for i in order]
    blob = "\n".join(sorted_words).encode()
    sizes = np.fromiter((len(w.encode()) + 1 for w in sorted_words), dtype=np.int64, count=len(sorted_words))
    word_of_key = keys // n_docs
    return _Postings(
        words=np.frombuffer(blob, dtype=np.uint8), word_starts=np.concatenate([[0], np.cumsum(sizes)]),
        indptr=np.concatenate([[0], np.cumsum(np.bincount(word_of_key, minlength=len(words)))]).astype(np.int64),
        docs=(keys % n_docs).astype(np.int32), tfs=tfs, lengths=lengths.astype(np.int32), ids=ids,
        group_of=group_of.astype(np.int32), groups=groups)


def _from_tokens(ids: Sequence[str], groups: Sequence[str], tokens: Iterable[list[str]]) -> _Postings:
    vocab: dict[str, int] = {}
    flat: list[int] = []
    lengths = []
    for toks in tokens:
        toks = toks or [_EMPTY]
        flat.extend([vocab.setdefault(t, len(vocab)) for t in toks])
        lengths.append(len(toks))
    names = list(dict.fromkeys(groups))
    number = {g: i for i, g in enumerate(names)}
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    return _postings(np.asarray(flat, dtype=np.int64), np.repeat(np.arange(len(ids)), lengths_arr), None, list(vocab),
                     len(ids), np.asarray(ids, dtype=str), np.fromiter((number[g] for g in groups), np.int64, len(ids)),
                     names, lengths_arr)


class _Segment:
    """One saved segment, opened memory-mapped (nothing is read until a query touches it)."""

    def __init__(self, folder: Path) -> None:
        self.name = folder.name
        # Plain arrays over the mappings: np.memmap's own indexing costs microseconds a call in Python.
        self.p = _Postings(**{a: np.asarray(np.load(folder / f"{a}.npy", mmap_mode="r")) for a in _ARRAYS},
                           groups=json.loads((folder / "groups.json").read_text()))
        self.n = len(self.p.lengths)
        self._group_number: dict[str, int] | None = None

    @staticmethod
    def write(folder: Path, p: _Postings) -> str:
        """Saves `p` as a new segment folder in `folder` (complete before it gets its name); returns the name."""
        name = f"seg-{uuid.uuid4().hex}"
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
        for a in _ARRAYS:
            np.save(tmp / f"{a}.npy", getattr(p, a), allow_pickle=False)
        (tmp / "groups.json").write_text(json.dumps(p.groups))
        tmp.rename(folder / name)
        return name

    def word_id(self, word: str) -> int:
        """The word's row, or -1 (binary search over the mapped words)."""
        key, starts, blob = word.encode(), self.p.word_starts, self.p.words
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[starts[mid]:starts[mid + 1] - 1].tobytes() < key:
                lo = mid + 1
            else:
                hi = mid
        found = lo < len(starts) - 1 and blob[starts[lo]:starts[lo + 1] - 1].tobytes() == key
        return lo if found else -1

    def words(self) -> list[str]:
        return self.p.words.tobytes().decode().split("\n")

    def group_mask(self, groups: Iterable[str]) -> np.ndarray | None:
        """The chunks of these groups, or None when the segment has none of them."""
        if self._group_number is None:
            self._group_number = {g: i for i, g in enumerate(self.p.groups)}
        numbers = [self._group_number[g] for g in groups if g in self._group_number]
        return np.isin(self.p.group_of, numbers) if numbers else None


@dataclass(frozen=True)
class _Part:
    """A segment as the index uses it: with its tombstones (True: deleted) and the file they are saved in."""

    seg: _Segment
    dead: np.ndarray | None = None
    dead_file: str | None = None

    @property
    def live(self) -> int:
        return self.seg.n - (int(self.dead.sum()) if self.dead is not None else 0)

    def postings(self, word: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(docs, tfs) of the live chunks holding `word`."""
        row = self.seg.word_id(word)
        if row < 0:
            return None
        lo, hi = int(self.seg.p.indptr[row]), int(self.seg.p.indptr[row + 1])
        docs, tfs = self.seg.p.docs[lo:hi], self.seg.p.tfs[lo:hi]
        if self.dead is not None:
            keep = ~self.dead[docs]
            docs, tfs = docs[keep], tfs[keep]
        return (docs, tfs) if len(docs) else None


@dataclass(frozen=True)
class _State:
    """What a search reads: replaced whole by an update, so a search running beside it sees one state."""

    parts: tuple[_Part, ...]
    revision: str
    n: int  # live chunks
    avg_len: float

    @classmethod
    def of(cls, parts: Sequence[_Part], revision: str) -> _State:
        n = sum(p.live for p in parts)
        total = sum(int(p.seg.p.lengths[~p.dead].sum() if p.dead is not None else p.seg.p.lengths.sum()) for p in parts)
        return cls(tuple(parts), revision, n, total / n if n else 0.0)


def _merge(folder: Path, parts: Sequence[_Part]) -> _Part:
    """One segment holding the live chunks of `parts`, from their postings (nothing is tokenised again)."""
    vocab: dict[str, int] = {}
    word_ids, doc_of, tfs, lengths, ids, group_of, names = [], [], [], [], [], [], []
    base = 0
    for part in parts:
        p = part.seg.p
        live = ~part.dead if part.dead is not None else np.ones(part.seg.n, dtype=bool)
        new_doc = np.cumsum(live) - 1 + base
        local = np.fromiter((vocab.setdefault(w, len(vocab)) for w in part.seg.words()), np.int64)
        keep = live[p.docs]
        word_ids.append(np.repeat(local, np.diff(p.indptr))[keep])
        doc_of.append(new_doc[p.docs][keep])
        tfs.append(np.asarray(p.tfs)[keep])
        lengths.append(np.asarray(p.lengths)[live])
        ids.append(np.asarray(p.ids)[live])
        group_of.append(np.asarray(p.group_of)[live] + len(names))
        names.extend(p.groups)
        base += int(live.sum())
    used = np.unique(np.concatenate(group_of))  # drop the groups no live chunk belongs to
    renumber = np.zeros(len(names), dtype=np.int64)
    renumber[used] = np.arange(len(used))
    postings = _postings(np.concatenate(word_ids), np.concatenate(doc_of), np.concatenate(tfs).astype(np.float64),
                         list(vocab), base, np.concatenate(ids), renumber[np.concatenate(group_of)],
                         [names[i] for i in used], np.concatenate(lengths))
    return _Part(_Segment(folder / _Segment.write(folder, postings)))


def _tidy(folder: Path, parts: list[_Part]) -> list[_Part]:
    """Drops empty segments, rewrites those more than half deleted, and merges the newest segment into the one
    before while it is at least half that one's size: segment sizes then at least halve from the oldest to the
    newest, so there are O(log n) of them and each chunk is rewritten O(log n) times in its life."""
    parts = [p for p in parts if p.live]
    parts = [_merge(folder, [p]) if 2 * p.live < p.seg.n else p for p in parts]
    while len(parts) >= 2 and 2 * parts[-1].live >= parts[-2].live:
        parts[-2:] = [_merge(folder, parts[-2:])]
    return parts


# --- the index -----------------------------------------------------------------------------------------------------
class LexicalIndex:
    """BM25 over (chunk id, text) pairs, saved in `folder` with the store revision it matches. Each chunk belongs
    to a group (by default itself; the store uses one group per source file) that `update` removes at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._state: _State | None = None
        self._word_cache: dict[str, frozenset[str]] = {}  # chunk id -> its words; emptied on every (re)load

    @property
    def revision(self) -> str | None:
        return self._state.revision if self._state is not None else None

    def __len__(self) -> int:
        return self._state.n if self._state is not None else 0

    def load(self) -> bool:
        """Open the saved index, memory-mapped; False when there is none, or it cannot be read, or it was built by
        another tokeniser or format (its words would not match the queries' words: the store rebuilds it)."""
        self._word_cache.clear()
        try:
            meta = json.loads((self.folder / "index.json").read_text())
            if meta.get("tokenizer") != tokenizer_name() or meta.get("format") != INDEX_FORMAT:
                raise ValueError("built by another tokeniser or format")
            parts = [_Part(_Segment(self.folder / s["name"]),
                           np.load(self.folder / s["dead"]) if s["dead"] else None, s["dead"])
                     for s in meta["segments"]]
            self._state = _State.of(parts, meta["revision"])
        except (OSError, ValueError, KeyError, TypeError):
            self._state = None
            return False
        return True

    def build(self, ids: list[str], texts: list[str], revision: str, groups: list[str] | None = None) -> None:
        """Index all chunks and save atomically (a crash leaves the old index, which is then seen as stale)."""
        if len(ids) != len(texts) or (groups is not None and len(groups) != len(ids)):
            raise ValueError("ids, texts and groups differ in length")
        postings = _from_tokens(ids, groups or ids, map(tokenize, texts)) if ids else None
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=".bm25-"))
        try:
            names = [_Segment.write(tmp, postings)] if postings is not None else []
            _write_meta(tmp, [{"name": n, "dead": None} for n in names], revision)
            old = self.folder.with_name(self.folder.name + ".old")
            if self.folder.exists():
                self.folder.rename(old)
            tmp.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not self.load():
            raise OSError(f"{self.folder}: the index just written cannot be read")

    def update(self, remove: Iterable[str], ids: list[str], texts: list[str], revision: str,
               groups: list[str] | None = None) -> None:
        """Remove the chunks of the groups in `remove`, add (ids, texts), and save as `revision`: only the new
        chunks are tokenised, and only a new segment, tombstones and merges are written (then committed by
        replacing index.json at once). Scores are the same as those of `build` over the resulting chunks."""
        state = self._state
        if state is None:
            raise RuntimeError("update() needs a loaded or built index")
        if len(ids) != len(texts) or (groups is not None and len(groups) != len(ids)):
            raise ValueError("ids, texts and groups differ in length")
        remove = list(remove)
        parts = [self._remove(part, remove) for part in state.parts]
        if ids:
            parts.append(_Part(_Segment(self.folder / _Segment.write(self.folder, _from_tokens(ids, groups or ids, map(tokenize, texts))))))
        parts = _tidy(self.folder, parts)
        segments = []
        for part in parts:
            if part.dead is not None and part.dead_file is None:
                part = _Part(part.seg, part.dead, _save_dead(self.folder, part.dead))
            segments.append(part)
        _write_meta(self.folder, [{"name": p.seg.name, "dead": p.dead_file} for p in segments], revision)
        self._state = _State.of(segments, revision)
        self._word_cache.clear()
        _collect_garbage(self.folder, {p.seg.name for p in segments} | {p.dead_file for p in segments if p.dead_file})

    @staticmethod
    def _remove(part: _Part, groups: list[str]) -> _Part:
        mask = part.seg.group_mask(groups)
        if mask is None:
            return part
        dead = mask if part.dead is None else (part.dead | mask)
        return part if part.dead is not None and np.array_equal(dead, part.dead) else _Part(part.seg, dead)

    def coverage(self, query: str, texts: dict[str, str]) -> dict[str, float]:
        """For each chunk (id -> text): the share of the question's words it contains, each word weighted by its
        BM25 inverse document frequency over the store (0..1). A question word found nowhere in the store weighs
        the most, so a question about something the documents never mention scores low everywhere. This is the
        relevance that `min_score` judges for Chinese questions, whose cosine similarity means little with MiniLM."""
        idf = self._weights(query)
        total = sum(idf.values())
        if not total:
            return {cid: 0.0 for cid in texts}
        return {cid: sum(idf[w] for w in idf.keys() & self._words(cid, text)) / total for cid, text in texts.items()}

    def share(self, query: str, text: str) -> float:
        """`coverage` for one text seen once (an answer's passages, for the support check), nothing cached."""
        idf = self._weights(query)
        # jieba's search mode gives a compound and its parts (苹果公司, 苹果, 公司); an answer joins parts the passage
        # and the question hold apart ("苹果的" ... "哪个公司"): judge the parts.
        for word in [w for w in idf if _CJK_RUN.fullmatch(w) and any(o != w and o in w for o in idf)]:
            del idf[word]
        total = sum(idf.values())
        return sum(idf[w] for w in idf.keys() & set(tokenize(text))) / total if total else 0.0

    def _weights(self, query: str) -> dict[str, float]:
        state = self._state
        return {w: self._idf(state, w) for w in set(tokenize(query))}

    @staticmethod
    def _idf(state: _State | None, word: str, postings: Sequence[tuple[np.ndarray, np.ndarray] | None] = ()) -> float:
        # bm25s' "lucene" IDF, over the live chunks of every segment.
        if state is None:
            return math.log(1 + 0.5 / 0.5)
        postings = postings or [part.postings(word) for part in state.parts]
        df = sum(len(p[0]) for p in postings if p is not None)
        return math.log(1 + (state.n - df + 0.5) / (df + 0.5))

    def _words(self, cid: str, text: str) -> frozenset[str]:
        words = self._word_cache.get(cid)
        if words is None:
            if len(self._word_cache) >= 50_000:
                self._word_cache.clear()
            words = self._word_cache[cid] = frozenset(tokenize(text))
        return words

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first, ties by id; only ids in `allowed` when given."""
        state, tokens = self._state, tokenize(query)
        if state is None or not state.n or not tokens or k <= 0:
            return []
        scores = [np.zeros(part.seg.n) for part in state.parts]
        for word in tokens:  # a word said twice counts twice, as in bm25s
            postings = [part.postings(word) for part in state.parts]
            idf = self._idf(state, word, postings)
            for part, score, hit in zip(state.parts, scores, postings):
                if hit is not None:
                    docs, tfs = hit
                    tf = tfs.astype(np.float64)
                    norm = BM25_K1 * ((1 - BM25_B) + BM25_B * part.seg.p.lengths[docs] / state.avg_len)
                    score[docs] += idf * tf / (norm + tf)
        return _top(state, np.concatenate(scores), k, allowed)


def _top(state: _State, scores: np.ndarray, k: int, allowed: set[str] | None) -> list[tuple[str, float]]:
    """The k best positive scores, ties broken by chunk id (the same order however the segments are cut)."""
    ids = np.concatenate([np.asarray(part.seg.p.ids) for part in state.parts]) if allowed is not None else None
    if ids is not None:
        scores = np.where(np.isin(ids, list(allowed)), scores, 0.0)
    hits = np.flatnonzero(scores > 0)
    if len(hits) > k:
        kth = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
        hits = hits[scores[hits] >= kth]  # every tie with the k-th stays in, for the id order below
    offsets = np.cumsum([0] + [part.seg.n for part in state.parts])
    where = np.searchsorted(offsets, hits, side="right") - 1
    hit_ids = np.concatenate([np.asarray(part.seg.p.ids[hits[where == w] - offsets[w]], dtype=object)
                              for w, part in enumerate(state.parts)])  # in `hits` order: both ascend by segment
    order = np.lexsort((hit_ids, -scores[hits]))[:k]
    return [(str(hit_ids[i]), float(scores[hits[i]])) for i in order]


def _write_meta(folder: Path, segments: list[dict], revision: str) -> None:
    """index.json, replaced at once: the commit point of a build or an update."""
    tmp = folder / f".index-{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps({"format": INDEX_FORMAT, "tokenizer": tokenizer_name(), "revision": revision,
                               "segments": segments}))
    os.replace(tmp, folder / "index.json")


def _save_dead(folder: Path, dead: np.ndarray) -> str:
    name = f"dead-{uuid.uuid4().hex}.npy"
    with open(folder / f".tmp-{name}", "wb") as fh:
        np.save(fh, dead, allow_pickle=False)
    os.replace(folder / f".tmp-{name}", folder / name)
    return name


def _collect_garbage(folder: Path, keep: set[str]) -> None:
    # Segments and tombstones that index.json no longer names, and what an interrupted update left. A search in
    # another process may still map a removed file: Linux keeps its pages until it is unmapped.
    for entry in folder.iterdir():
        if entry.name not in keep and entry.name != "index.json":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
