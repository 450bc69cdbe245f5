"""Reading text files: the encoding from a BOM, a declared charset, the NUL pattern of UTF-16/32, strict UTF-8
or charset-normalizer (with fixes for GBK vs Big5 and cp1250 vs cp1252); binary files are refused by name."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from rag.lang import HAN, KANA_HANGUL
from rag.loaders.common import LoadError, Loaded, as_load_error, normalise, read_bytes, single_document


def read_text_file(path: Path | str) -> str:
    """Read a text file, detecting its encoding; newlines become \\n and NULs are dropped.

    Raises `LoadError` when the bytes are not text (gzip, a PDF, random binary).
    """
    with as_load_error(path):
        return decode_bytes(read_bytes(path), path)


def load_text(path: Path | str, password: str | None) -> Loaded:
    source = str(path)
    text = read_text_file(path).strip()
    warns = []
    # e.g. a hex dump saved as .txt: still text, so ingested, but worth telling the user about.
    longest = max((len(word) for word in text.split() if len(word) >= 2000 and word.isascii()), default=0)
    if longest:
        warns.append(
            f"{source}: contains a {longest}-character run without spaces (encoded data such as hex or base64?); "
            "ingested as-is"
        )
    return single_document(source, text, empty="empty file", warnings=warns)


# UTF-32 LE must be tested before UTF-16 LE: its BOM (FF FE 00 00) starts with the UTF-16 LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Signatures of binary formats people save under a text extension by mistake.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "pdf"),
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "a zip archive (or .docx/.xlsx/.odt)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office file (.doc/.xls)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BZh91AY&SY", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"SQLite format 3\x00", "an SQLite database"),
)

# Latin-script single-byte code pages that charset-normalizer cannot tell apart on short samples.
_LATIN_SINGLE_BYTE = frozenset(
    {
        "cp1250", "cp1252", "cp1254", "cp1257", "cp1258", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4",
        "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_latin2",
        "mac_roman", "mac_iceland", "mac_turkish", "cp437", "cp850", "cp858", "cp775", "cp852",
    }
)  # fmt: skip
_GB = frozenset({"gb2312", "gbk", "gb18030", "hz"})
_BIG5 = frozenset({"big5", "big5hkscs", "cp950"})
_CHINESE = _GB | _BIG5
_EAST_ASIAN = _CHINESE | frozenset(
    {"shift_jis", "shift_jis_2004", "shift_jisx0213", "cp932", "euc_jp", "euc_jis_2004", "euc_jisx0213",
     "iso2022_jp", "cp949", "euc_kr", "johab", "iso2022_kr"}
)  # fmt: skip

# Decoded text with more of these than this share is binary that happened to decode.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Characters real UTF-16 text is made of (ASCII, Latin, Greek/Cyrillic, punctuation, CJK, kana, Hangul).
_PLAUSIBLE_UTF16 = re.compile(
    "[\t\n\r\x20-\x7e\u00a0-\u024f\u0370-\u04ff\u2000-\u206f\u3000-\u303f\uff00-\uffef" + HAN + KANA_HANGUL + "]"
)
_MAX_CONTROL_SHARE = 0.02
_MAX_STRAY_NUL_SHARE = 0.01


def decode_bytes(data: bytes, path: Path | str, declared: str | None = None) -> str:
    """bytes -> normalised str. Order: BOM, binary signatures, declared charset (HTML), UTF-16/32 by
    NUL pattern, strict UTF-8, then charset-normalizer with fixes for its known confusions."""
    if not data:
        return ""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            # A BOM is a strong statement; a few bad bytes after it are replaced rather than fatal.
            return normalise(data[len(bom) :].decode(encoding, errors="replace"))

    kind = _binary_kind(data)
    if kind == "pdf":
        raise LoadError(path, "binary content, not text (this is a PDF file; rename it to .pdf)")
    if kind:
        raise LoadError(path, f"binary content, not text (looks like {kind})")

    if declared:
        text = _try_decode(data, declared)
        if text is not None:
            return _checked_text(normalise(text), path)

    if b"\x00" in data:
        # Must come before UTF-8: UTF-16-BE ASCII text *is* valid UTF-8, full of NUL characters.
        encoding = _utf16_32_by_nuls(data)
        if encoding is None and _try_decode(data.replace(b"\x00", b""), "utf-8") is None:
            # Only now: ASCII text read as UTF-16 looks like CJK ("Bush hid the facts"), so a
            # stray NUL in UTF-8 text must never get this far.
            encoding = _utf16_by_content(data)
        if encoding:
            return _checked_text(normalise(data.decode(encoding)), path)
        if data.count(b"\x00") > _MAX_STRAY_NUL_SHARE * len(data):
            raise LoadError(path, "binary content, not text (NUL bytes that are not UTF-16/UTF-32)")
        data = data.replace(b"\x00", b"")

    try:
        return _checked_text(normalise(data.decode("utf-8")), path)
    except UnicodeDecodeError:
        pass

    encoding = _guess_legacy_encoding(data)
    if encoding is None:
        raise LoadError(path, "binary content, not text (no text encoding fits)")
    return _checked_text(normalise(data.decode(encoding, errors="replace")), path)


def _checked_text(text: str, path: Path | str) -> str:
    if len(_CONTROL_CHARS.findall(text)) > _MAX_CONTROL_SHARE * max(len(text), 1):
        raise LoadError(path, "binary content, not text (too many control characters)")
    return text


def _binary_kind(data: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def _try_decode(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _utf16_32_by_nuls(data: bytes) -> str | None:
    """Name the BOM-less UTF-16/32 variant the NUL byte positions point to, if the bytes decode."""
    n = len(data)
    if n >= 4 and n % 4 == 0:
        quarter = n // 4
        zeros = [data[k::4].count(0) for k in range(4)]
        # Code points stop at U+10FFFF, so one outer byte of every UTF-32 unit is always NUL.
        if zeros[3] == quarter and zeros[2] >= 0.5 * quarter:
            candidate = "utf-32-le"
        elif zeros[0] == quarter and zeros[1] >= 0.5 * quarter:
            candidate = "utf-32-be"
        else:
            candidate = None
        if candidate and _try_decode(data, candidate) is not None:
            return candidate
    if n % 2 == 0:
        even, odd = data[0::2].count(0), data[1::2].count(0)
        # ASCII in UTF-16 puts its NUL on one side only; the other side sees only the odd
        # CJK character whose low byte happens to be 00.
        if odd >= 2 and even <= 0.1 * odd:
            candidate = "utf-16-le"
        elif even >= 2 and odd <= 0.1 * even:
            candidate = "utf-16-be"
        else:
            return None
        if _try_decode(data, candidate) is not None:
            return candidate
    return None


def _utf16_by_content(data: bytes) -> str | None:
    """BOM-less UTF-16 that is nearly all CJK has too few NULs for a pattern ('一' is 4E 00); fall
    back to which byte order gives plausible characters (the wrong one gives ~50% junk)."""
    if len(data) % 2:
        return None
    shares = {}
    for encoding in ("utf-16-le", "utf-16-be"):
        text = _try_decode(data, encoding)
        shares[encoding] = len(_PLAUSIBLE_UTF16.findall(text)) / len(text) if text else 0.0
    (first, first_share), (_, second_share) = sorted(shares.items(), key=lambda item: -item[1])
    # Require a clear winner: 8-bit text read as UTF-16 is "plausible" CJK in both byte orders.
    return first if first_share >= 0.9 and second_share < 0.75 else None


def _guess_legacy_encoding(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    results = list(from_bytes(data))  # best first
    if not results:
        return None
    if results[0].encoding.startswith(("utf_16", "utf_32")) and _utf16_by_content(data) is None:
        # Real BOM-less UTF-16/32 has NULs (handled earlier) or passes the content check; short
        # GBK / Big5 samples are what charset-normalizer calls UTF-16-BE here.
        results = [m for m in results if not m.encoding.startswith(("utf_16", "utf_32"))] or results
    best = results[0]
    encoding = best.encoding
    if encoding in _LATIN_SINGLE_BYTE:
        # charset-normalizer often ranks cp1250 first for German/French/Spanish text that is
        # really cp1252/Latin-1 ('à' would become 'ŕ'); on a tie, the far more common cp1252 wins.
        tied = [m for m in results if m.chaos <= best.chaos + 0.01]
        cp1252_tied = any(m.encoding == "cp1252" or "cp1252" in m.could_be_from_charset for m in tied)
        if cp1252_tied and _try_decode(data, "cp1252") is not None:
            return "cp1252"
        return encoding
    if encoding in _CHINESE:
        return _gb_or_big5(data, encoding)
    if encoding in _EAST_ASIAN or encoding.startswith("utf_"):
        # Short Chinese samples come out as Japanese / Korean with Chinese a close second; Chinese
        # wins if the byte pairs really are common Chinese characters.
        # Only the standards charset-normalizer itself ranks close count: Big5's common-character
        # rows are where EUC-JP keeps its kana.
        near = {m.encoding for m in results if m.chaos <= best.chaos + 0.05}
        gb_share, big5_share = _chinese_common_shares(data)
        if near & _GB and gb_share >= 0.9 and (gb_share >= big5_share or not near & _BIG5):
            return _gb_or_big5(data, encoding)
        if near & _BIG5 and big5_share >= 0.9:
            return _gb_or_big5(data, encoding)
    return encoding


def _chinese_common_shares(data: bytes) -> tuple[float, float]:
    """Share of two-byte pairs that are common characters under GB2312/GBK and under Big5.

    Each standard keeps its frequent characters in a known lead-byte range (GB2312 level 1:
    B0-D7 with trail A1-FE; Big5 frequent hanzi: A4-C6), plus punctuation rows A1-A3.
    """
    pairs = re.findall(rb"[\x81-\xfe][\x00-\xff]", data, flags=re.DOTALL)
    if not pairs:
        return 0.0, 0.0
    gb = sum(1 for p in pairs if (0xA1 <= p[0] <= 0xA3 or 0xB0 <= p[0] <= 0xD7) and p[1] >= 0xA1)
    big5 = sum(1 for p in pairs if 0xA1 <= p[0] <= 0xC6)
    return gb / len(pairs), big5 / len(pairs)


def _gb_or_big5(data: bytes, guess: str) -> str:
    """GBK and Big5 byte streams often decode without error as each other, into garbage; real
    text is mostly common characters, so the standard under which more pairs are common wins."""
    gb = "gb18030" if _try_decode(data, "gb18030") is not None else None
    big5 = next((e for e in ("big5", "cp950", "big5hkscs") if _try_decode(data, e) is not None), None)
    if not gb or not big5:
        return gb or big5 or guess
    gb_share, big5_share = _chinese_common_shares(data)
    if gb_share == big5_share:
        return big5 if guess in ("big5", "big5hkscs", "cp950") else gb
    return gb if gb_share > big5_share else big5
