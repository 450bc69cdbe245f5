"""Judging extracted text: whether a PDF page's text layer is junk (unmapped fonts, bad OCR), and repairing the
spaces pypdf puts between CJK characters."""

from __future__ import annotations

import re

from rag.lang import HAN

# CJK ideographs, kana, bopomofo, CJK symbols/punctuation (not U+3000 itself) and full-width forms.
_CJK_RANGES = (
    "\u2e80-\u2fdf\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf\u31f0-\u31ff"
    + HAN + "\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f"
)
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# Whitespace except the ideographic space U+3000, which is deliberate layout in CJK text.
_CJK_GAP = re.compile(f"(?<=[{_CJK_RANGES}])[^\\S\u3000]+(?=[{_CJK_RANGES}])")

_WS_CHARS = re.compile(r"\s")
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd]")
_GLYPH_NAMES = re.compile(r"/g\d+|/uni[0-9A-Fa-f]{4,6}|\(cid:\d+\)|/cid\d+|/glyph\d+")
_LETTERS = re.compile(r"[^\W\d_]")
_DIGITS = re.compile(r"\d")
_OCR_NOISE = re.compile(r"[^\W\d_][«»£©¢¤¥¦§¨¬®¯´¸•^*&]+[^\W\d_]")
_CODE_CHARS = re.compile(r"[/\\=_${}<>()\[\]\"”“'`:|~@#%]")


def repair_cjk_spaces(text: str) -> str:
    """Remove whitespace (spaces and line breaks) between two CJK characters or CJK punctuation.

    pypdf breaks Chinese lines into '系 统' / '系\\n统'; spaces between CJK and Latin words are kept.
    """
    return _CJK_GAP.sub("", text)


def looks_like_garbage(text: str) -> bool:
    """True if extracted PDF text is junk: fonts without a Unicode map, or a bad OCR layer.

    Cheap per-page rules, tuned on ../shared/corpus/bad_inputs/pdf_bad_text against the R manuals and
    the English / Chinese Debian reference (whose pypdf text lacks inter-word spaces and must pass).
    """
    nonspace = len(text) - len(_WS_CHARS.findall(text))
    if nonspace == 0:
        return False  # empty is "no text layer", reported separately
    # Control, private-use and U+FFFD characters: what unmapped glyph codes decode to.
    bad = len(_BAD_CHARS.findall(text))
    if bad >= 3 and bad > 0.05 * nonspace:
        return True
    # pypdf falls back to glyph names ('/g437') when a Type3 font has no Unicode map.
    if sum(len(m) for m in _GLYPH_NAMES.findall(text)) > 0.3 * nonspace:
        return True
    letters = len(_LETTERS.findall(text))
    if letters == 0:
        # Page numbers and numeric tables are fine; a page of punctuation soup is not.
        return 2 * len(_DIGITS.findall(text)) < nonspace
    tokens = text.split()
    if len(tokens) >= 10:
        # Offset-encoded fonts come out as 'F n e m b \ h e h k': a letter per token. Real prose
        # (even code listings with x, y, i) stays far below this.
        single = sum(1 for t in tokens if len(t) == 1 and t.isalpha() and t not in "aAI" and not _CJK_CHAR.match(t))
        if single >= 0.4 * len(tokens):
            return True
    # Bad OCR glues symbols inside words ('s*r;tiiR»', 'FRG&t', 'H^uid', '3s«»teership'). Code has
    # symbols too, so tokens with code characters are ignored and several distinct hits are required.
    hits = {t for t in tokens if _OCR_NOISE.search(t) and not _CODE_CHARS.search(t)}
    if len(hits) >= 3:
        noisy = sum(1 for t in tokens if t in hits)
        if noisy >= 0.03 * len(tokens):
            return True
    return False
