"""The lexical side of retrieval: a BM25 index (bm25s) over every chunk in the store, tokenised with jieba
for Chinese and by words (Snowball-stemmed) for everything else, kept on disk beside the store and rebuilt when
the store or the tokeniser changes."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

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


class LexicalIndex:
    """BM25 over (chunk id, text) pairs, saved in `folder` with the store revision it was built from."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._bm25 = None
        self._ids: list[str] = []
        self.revision: str | None = None
        self._word_cache: dict[str, frozenset[str]] = {}  # chunk id -> its words; emptied on every (re)load

    def load(self) -> bool:
        """Read the saved index; False when there is none (or it cannot be read)."""
        import bm25s

        self._word_cache.clear()
        meta = self.folder / "ids.json"
        if not meta.is_file():
            return False
        try:
            data = json.loads(meta.read_text())
            if data.get("tokenizer") != tokenizer_name():
                # Built by another version of the tokeniser: its words would not match the queries' words.
                self._bm25, self._ids, self.revision = None, [], None
                return False
            self._ids, self.revision = data["ids"], data["revision"]
            self._bm25 = bm25s.BM25.load(str(self.folder)) if self._ids else None
        except (OSError, ValueError, KeyError):
            self._bm25, self._ids, self.revision = None, [], None
            return False
        return True

    def build(self, ids: list[str], texts: list[str], revision: str) -> None:
        """Index all chunks and save atomically (a crash leaves the old index, which is then seen as stale)."""
        import bm25s

        bm25 = None
        if ids:
            bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B)
            bm25.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=".bm25-"))
        try:
            if bm25 is not None:
                bm25.save(str(tmp))
            (tmp / "ids.json").write_text(json.dumps({"ids": ids, "revision": revision, "tokenizer": tokenizer_name()}))
            old = self.folder.with_name(self.folder.name + ".old")
            if self.folder.exists():
                self.folder.rename(old)
            tmp.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._bm25, self._ids, self.revision = bm25, list(ids), revision
        self._word_cache.clear()

    def coverage(self, query: str, texts: dict[str, str]) -> dict[str, float]:
        """For each chunk (id -> text): the share of the question's words it contains, each word weighted by its
        BM25 inverse document frequency over the store (0..1). A question word found nowhere in the store weighs
        the most, so a question about something the documents never mention scores low everywhere. This is the
        relevance that `min_score` judges for Chinese questions, whose cosine similarity means little with MiniLM."""
        words = set(tokenize(query))
        if not words:
            return {cid: 0.0 for cid in texts}
        idf = {w: self._idf(w) for w in words}
        total = sum(idf.values())
        return {cid: sum(idf[w] for w in words & self._words(cid, text)) / total for cid, text in texts.items()}

    def _idf(self, word: str) -> float:
        n, df = len(self._ids), 0
        if self._bm25 is not None:
            tid = self._bm25.vocab_dict.get(word)
            if tid is not None:
                indptr = self._bm25.scores["indptr"]
                df = int(indptr[tid + 1] - indptr[tid])
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def _words(self, cid: str, text: str) -> frozenset[str]:
        words = self._word_cache.get(cid)
        if words is None:
            if len(self._word_cache) >= 50_000:
                self._word_cache.clear()
            words = self._word_cache[cid] = frozenset(tokenize(text))
        return words

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; only ids in `allowed` when given."""
        tokens = tokenize(query)
        if self._bm25 is None or not tokens:
            return []
        mask = None
        if allowed is not None:
            import numpy as np

            mask = np.fromiter((cid in allowed for cid in self._ids), dtype=np.float32, count=len(self._ids))
            if not mask.any():
                return []
        docs, scores = self._bm25.retrieve([tokens], k=min(k, len(self._ids)), show_progress=False, n_threads=1,
                                           weight_mask=mask)
        return [(self._ids[int(i)], float(s)) for i, s in zip(docs[0], scores[0]) if s > 0]
