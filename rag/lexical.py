"""The lexical side of retrieval: a BM25 index (bm25s) over every chunk in the store, tokenised with jieba
for Chinese and by words for everything else, kept on disk beside the store and rebuilt when the store changes."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[^\W_]+", re.UNICODE)
# Words so common that matching them says nothing about relevance.
_STOP = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to was were what when "
    "where which who why will with do does did can could should would you your my we our they their there these "
    "those not no yes if then than so such into about".split()
)
_CJK_STOP = frozenset("的 了 是 在 和 与 或 及 也 就 都 而 被 把 吗 呢 吧 啊 什么 怎么 如何 哪些 哪个 为什么 一个 这个 那个 这些 那些 请问 是否".split())


def tokenize(text: str) -> list[str]:
    """Lower-cased words; Chinese runs cut into words by jieba (search mode, for recall)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces building its dictionary on stderr otherwise
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        tok = match.group()
        if _CJK_RUN.fullmatch(tok):
            tokens.extend(t for t in jieba.lcut_for_search(tok) if t.strip() and t not in _CJK_STOP)
        elif tok not in _STOP:
            tokens.append(tok)
    return tokens


class LexicalIndex:
    """BM25 over (chunk id, text) pairs, saved in `folder` with the store revision it was built from."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._bm25 = None
        self._ids: list[str] = []
        self.revision: str | None = None

    def load(self) -> bool:
        """Read the saved index; False when there is none (or it cannot be read)."""
        import bm25s

        meta = self.folder / "ids.json"
        if not meta.is_file():
            return False
        try:
            data = json.loads(meta.read_text())
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
            bm25 = bm25s.BM25()
            bm25.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=".bm25-"))
        try:
            if bm25 is not None:
                bm25.save(str(tmp))
            (tmp / "ids.json").write_text(json.dumps({"ids": ids, "revision": revision}))
            old = self.folder.with_name(self.folder.name + ".old")
            if self.folder.exists():
                self.folder.rename(old)
            tmp.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._bm25, self._ids, self.revision = bm25, list(ids), revision

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; only ids in `allowed` when given."""
        tokens = tokenize(query)
        if self._bm25 is None or not tokens:
            return []
        n = len(self._ids) if allowed is not None else min(k, len(self._ids))
        docs, scores = self._bm25.retrieve([tokens], k=n, show_progress=False, n_threads=1)
        hits = [(self._ids[int(i)], float(s)) for i, s in zip(docs[0], scores[0]) if s > 0]
        if allowed is not None:
            hits = [h for h in hits if h[0] in allowed]
        return hits[:k]
