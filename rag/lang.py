"""Which language a text is in, and the character ranges every stage uses to tell Chinese from the rest."""

from __future__ import annotations

import re

# CJK unified ideographs (extension A, the main block, compatibility): what jieba cuts into words and what
# makes a question Chinese.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Japanese kana and Korean hangul: written without spaces too, so answers in them are compared by character.
KANA_HANGUL = "\u3040-\u30ff\uac00-\ud7af"
HAN_CHAR = re.compile(f"[{HAN}]")


def language_of(text: str) -> str:
    """'zh' when the text is mostly Chinese, else 'en' (the two languages we prompt in)."""
    cjk = len(HAN_CHAR.findall(text))
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if cjk and cjk >= 0.3 * max(letters, 1) else "en"
