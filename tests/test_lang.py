"""rag.lang: the Chinese character ranges and the language a text is prompted in."""

import pytest

from rag.lang import HAN_CHAR, KANA_HANGUL, language_of


@pytest.mark.parametrize(
    "text, language",
    [
        ("", "en"),
        ("1234 ?! ...", "en"),
        ("中", "zh"),
        ("Who wrote R?", "en"),
        ("rustup 是什么工具", "zh"),
        # the threshold: Chinese characters make up at least 30% of the letters (Latin letters and CJK alike)
        ("中文字abcdefg", "zh"),  # 3 of 10
        ("中文abcdefgh", "en"),  # 2 of 10
        ("中文字 abc defg, 1999!", "zh"),  # digits, spaces and punctuation are not letters
        # Japanese kana and Korean hangul are not Chinese
        ("ひらがなとカタカナ", "en"),
        ("한국어 문장입니다", "en"),
    ],
)
def test_language_of(text, language):
    assert language_of(text) == language


def test_han_ranges_end_where_the_unicode_blocks_do():
    # extension A, the unified ideographs, the compatibility ideographs: first and last code points of each
    assert [bool(HAN_CHAR.fullmatch(ch)) for ch in "\u3400\u4dbf\u4e00\u9fff\uf900\ufaff"] == [True] * 6
    # their neighbours: a squared Latin abbreviation, a Yijing hexagram, a Yi syllable, a private-use
    # character, a Latin ligature, and kana and hangul
    assert [bool(HAN_CHAR.fullmatch(ch)) for ch in "\u33ff\u4dc0\ua000\uf8ff\ufb00\u3042\uac00"] == [False] * 7


def test_kana_hangul_ranges():
    import re

    kana_hangul = re.compile(f"[{KANA_HANGUL}]")
    assert [bool(kana_hangul.fullmatch(ch)) for ch in "\u3040\u30ff\uac00\ud7af"] == [True] * 4
    assert [bool(kana_hangul.fullmatch(ch)) for ch in "\u303f\u3100\uabff\ud7b0\u4e00"] == [False] * 5
