"""Turn one file into LangChain `Document`s with metadata: one loader per suffix, encoding detection
for text, and a single `LoadError` (path + one-line reason) for anything that cannot be read."""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag.lang import HAN

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".docx"})

_MAX_REASON = 200


class LoadError(Exception):
    """A file that cannot be read at all; `str(e)` is "<path>: <reason>" on one line."""

    def __init__(self, path: Path | str, reason: str):
        reason = _one_line(reason) or "unknown error"
        # Both go to Exception.__init__ so the error survives pickling (multiprocessing ingest).
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Loaded:
    """What one file produced: its documents, its page count and human-readable warnings."""

    documents: list[Document]
    pages: int
    warnings: list[str] = field(default_factory=list)


OCR_MODES = ("auto", "always", "never")


def load_file(path: Path | str, *, password: str | None = None, ocr: str = "auto",
              ocr_progress: Callable[[int, int], None] | None = None) -> Loaded:
    """Load one file by suffix; raise `LoadError` (never anything else) if it cannot be read.

    `ocr` (PDF only): "auto" reads pages whose text layer is missing or garbage by OCR, "always" every page,
    "never" none (those pages are then reported in a warning). `ocr_progress(done, total)` is called after
    each OCR'd page (OCR takes seconds a page)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise LoadError(path, f"unsupported file type {suffix}" if suffix else "unsupported file type (no suffix)")
    if ocr not in OCR_MODES:
        raise ValueError(f"ocr must be one of {OCR_MODES}")
    with _as_load_error(path):
        if suffix == ".pdf":
            return _load_pdf(path, password, ocr, ocr_progress)
        return _LOADERS[suffix](path, password)


def read_text_file(path: Path | str) -> str:
    """Read a text file, detecting its encoding; newlines become \\n and NULs are dropped.

    Raises `LoadError` when the bytes are not text (gzip, a PDF, random binary).
    """
    with _as_load_error(path):
        return _decode_bytes(_read_bytes(path), path)


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


# --- shared helpers ---------------------------------------------------------------------------


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextlib.contextmanager
def _as_load_error(path: Path | str) -> Iterator[None]:
    """Let LoadError through; turn anything else a loader raises into a one-line LoadError."""
    try:
        yield
    except LoadError:
        raise
    except Exception as exc:  # the contract is "LoadError or nothing", whatever the library does
        raise LoadError(path, _describe(exc)) from exc


def _read_bytes(path: Path | str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise LoadError(path, "file not found") from None
    except IsADirectoryError:
        raise LoadError(path, "is a directory, not a file") from None
    except PermissionError:
        raise LoadError(path, "permission denied") from None
    except OSError as exc:
        raise LoadError(path, f"cannot read file ({exc.strerror or _describe(exc)})") from None


def _check_readable(path: Path | str) -> None:
    # Libraries that take a path (pypdf, python-docx) give odd messages for these cases.
    p = Path(path)
    if not p.exists():
        raise LoadError(path, "file not found")
    if p.is_dir():
        raise LoadError(path, "is a directory, not a file")


def _metadata(source: str, *, page: int | None = None, title: str | None = None) -> dict[str, Any]:
    # Chroma metadata cannot hold None, so absent values are left out rather than stored as None.
    meta: dict[str, Any] = {"source": source}
    if page is not None:
        meta["page"] = page
    if title:
        meta["title"] = title
    return meta


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _page_list(pages: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(p) for p in pages[:limit])
    return shown + (f", … (+{len(pages) - limit} more)" if len(pages) > limit else "")


# --- text decoding ----------------------------------------------------------------------------

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
# Characters real UTF-16 text is made of (ASCII, Latin, Greek/Cyrillic, CJK, kana, Hangul, punctuation).
_PLAUSIBLE_UTF16 = re.compile(
    "[\t\n\r\x20-\x7e\u00a0-\u024f\u0370-\u04ff\u2000-\u206f\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7a3\uff00-\uffef]"
)
_MAX_CONTROL_SHARE = 0.02
_MAX_STRAY_NUL_SHARE = 0.01


def _decode_bytes(data: bytes, path: Path | str, declared: str | None = None) -> str:
    """bytes -> normalised str. Order: BOM, binary signatures, declared charset (HTML), UTF-16/32 by
    NUL pattern, strict UTF-8, then charset-normalizer with fixes for its known confusions."""
    if not data:
        return ""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            # A BOM is a strong statement; a few bad bytes after it are replaced rather than fatal.
            return _normalise(data[len(bom) :].decode(encoding, errors="replace"))

    kind = _binary_kind(data)
    if kind == "pdf":
        raise LoadError(path, "binary content, not text (this is a PDF file; rename it to .pdf)")
    if kind:
        raise LoadError(path, f"binary content, not text (looks like {kind})")

    if declared:
        text = _try_decode(data, declared)
        if text is not None:
            return _checked_text(_normalise(text), path)

    if b"\x00" in data:
        # Must come before UTF-8: UTF-16-BE ASCII text *is* valid UTF-8, full of NUL characters.
        encoding = _utf16_32_by_nuls(data)
        if encoding is None and _try_decode(data.replace(b"\x00", b""), "utf-8") is None:
            # Only now: ASCII text read as UTF-16 looks like CJK ("Bush hid the facts"), so a
            # stray NUL in UTF-8 text must never get this far.
            encoding = _utf16_by_content(data)
        if encoding:
            return _checked_text(_normalise(data.decode(encoding)), path)
        if data.count(b"\x00") > _MAX_STRAY_NUL_SHARE * len(data):
            raise LoadError(path, "binary content, not text (NUL bytes that are not UTF-16/UTF-32)")
        data = data.replace(b"\x00", b"")

    try:
        return _checked_text(_normalise(data.decode("utf-8")), path)
    except UnicodeDecodeError:
        pass

    encoding = _guess_legacy_encoding(data)
    if encoding is None:
        raise LoadError(path, "binary content, not text (no text encoding fits)")
    return _checked_text(_normalise(data.decode(encoding, errors="replace")), path)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")


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


# --- loaders ----------------------------------------------------------------------------------


def _load_text(path: Path | str, password: str | None) -> Loaded:
    source = str(path)
    text = read_text_file(path).strip()
    if not text:
        return Loaded(documents=[], pages=1, warnings=[f"{source}: empty file"])
    warns = []
    # e.g. a hex dump saved as .txt: still text, so ingested, but worth telling the user about.
    longest = max((len(word) for word in text.split() if len(word) >= 2000 and word.isascii()), default=0)
    if longest:
        warns.append(
            f"{source}: contains a {longest}-character run without spaces (encoded data such as hex or base64?); "
            "ingested as-is"
        )
    return Loaded(documents=[Document(page_content=text, metadata=_metadata(source))], pages=1, warnings=warns)


# --- HTML ---

_HTML_DECLARED = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)|<\?xml[^>]+?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.IGNORECASE,
)
# What browsers actually do with these labels (WHATWG encoding standard), not what they say.
_HTML_LABELS = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
                "ascii": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030"}  # fmt: skip

_DROP_TAGS = ("head", "script", "style", "noscript", "template", "svg", "iframe", "object", "canvas")
_PARAGRAPH_TAGS = frozenset(
    {"p", "div", "section", "article", "header", "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4",
     "h5", "h6", "ul", "ol", "dl", "table", "pre", "blockquote", "hr", "form", "fieldset", "figure",
     "figcaption", "address", "details", "summary", "center", "caption", "body", "html"}
)  # fmt: skip
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd", "br", "option", "legend", "thead", "tbody", "tfoot"})
_CELL_TAGS = frozenset({"td", "th"})
_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")


def _declared_html_charset(data: bytes) -> str | None:
    match = _HTML_DECLARED.search(data[:4096])
    if not match:
        return None
    label = (match.group(1) or match.group(2)).decode("ascii").lower()
    label = _HTML_LABELS.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    # A UTF-16/32 label readable as ASCII is a lie (WHATWG says treat it as UTF-8).
    return "utf-8" if name.startswith(("utf-16", "utf-32")) else name


def _load_html(path: Path | str, password: str | None) -> Loaded:
    source = str(path)
    data = _read_bytes(path)
    markup = _decode_bytes(data, path, declared=_declared_html_charset(data))
    text, title = _html_to_text(markup)
    if not text:
        return Loaded(documents=[], pages=1, warnings=[f"{source}: no text in this HTML file"])
    return Loaded(documents=[Document(page_content=text, metadata=_metadata(source, title=title))], pages=1)


def _html_to_text(markup: str) -> tuple[str, str | None]:
    """Visible text of an HTML page (block elements -> line/paragraph breaks) and its <title>."""
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, PreformattedString, Tag

    soup = BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()

    out = _TextAssembler()
    # Explicit stack rather than recursion: real-world HTML can nest deeper than Python's limit.
    stack: list[tuple[Any, bool, bool]] = [(soup, False, False)]  # (node, in <pre>, closing?)
    while stack:
        node, in_pre, closing = stack.pop()
        if isinstance(node, Tag):
            name = node.name
            if closing:
                if name in _CELL_TAGS:
                    out.end_cell()
                elif name in _PARAGRAPH_TAGS:
                    out.brk(2)
                elif name in _LINE_TAGS:
                    out.brk(1)
                continue
            if name in _PARAGRAPH_TAGS:
                out.brk(2)
            elif name in _LINE_TAGS:
                out.brk(1)
            child_pre = in_pre or name in ("pre", "textarea", "listing", "plaintext", "xmp")
            stack.append((node, in_pre, True))
            stack.extend((child, child_pre, False) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            # PreformattedString covers comments, doctype, CDATA and <?xml ...?> declarations.
            out.text(str(node), in_pre)
    return out.result(), (title or None)


class _TextAssembler:
    """Accumulates HTML text with collapsed whitespace and pending line/paragraph breaks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0  # newlines owed before the next text
        self.at_line_start = True
        self.cell_open = False  # a table cell ended on this line: separate the next one

    def brk(self, newlines: int) -> None:
        self.pending = max(self.pending, newlines)
        self.cell_open = False

    def end_cell(self) -> None:
        self.cell_open = True

    def text(self, s: str, pre: bool) -> None:
        s = s.replace("\xa0", " ")
        if not pre:
            s = _HTML_SPACE.sub(" ", s)
            if s == " ":
                # Whitespace between tags only separates words within a line; it must not
                # trigger pending breaks (that would double them) or open an empty table cell.
                if not (self.at_line_start or self.pending or self.cell_open) and not self.parts[-1].endswith(" "):
                    self.parts.append(" ")
                return
        if not s:
            return
        if self.pending and self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * self.pending)
            self.at_line_start = True
        self.pending = 0
        if not pre:
            if self.at_line_start or self.cell_open:
                s = s.lstrip(" ")
            elif s.startswith(" ") and self.parts[-1].endswith((" ", "\n")):
                s = s[1:]
        if self.cell_open and not self.at_line_start and s:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            s = " | " + s
        self.cell_open = False
        if s:
            self.parts.append(s)
            self.at_line_start = s.endswith("\n")

    def result(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]+\n", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        return text.strip()


# --- DOCX ---

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def _load_docx(path: Path | str, password: str | None) -> Loaded:
    source = str(path)
    _check_readable(path)
    if not zipfile.is_zipfile(path):
        # python-docx would only say "Package not found"; a .docx is a zip archive.
        raise LoadError(path, "not a readable .docx (not a valid zip archive: truncated, corrupt or not a .docx)")
    import docx

    try:
        document = docx.Document(str(path))
    except Exception as exc:  # BadZipFile, PackageNotFoundError, KeyError, XMLSyntaxError, ...
        raise LoadError(path, f"not a readable .docx ({_describe(exc)})") from exc
    blocks = [b for b in _docx_blocks(document.element.body) if b.strip()]
    text = "\n\n".join(blocks).strip()
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:  # a broken core.xml should not cost us the body text
        title = ""
    if not text:
        return Loaded(documents=[], pages=1, warnings=[f"{source}: no text in this .docx"])
    return Loaded(documents=[Document(page_content=text, metadata=_metadata(source, title=title))], pages=1)


def _docx_children(element: Any) -> Iterator[Any]:
    """Children, looking through content controls and custom XML wrappers, which carry no text of their own."""
    for child in element.iterchildren():
        if child.tag in (f"{_W}sdt", f"{_W}customXml"):
            content = child.find(f"{_W}sdtContent")
            yield from _docx_children(content if content is not None else child)
        else:
            yield child


def _docx_blocks(container: Any) -> Iterator[str]:
    """Paragraph and table texts of a body or table cell, in document order."""
    for child in _docx_children(container):
        if child.tag == f"{_W}p":
            yield _docx_paragraph(child)
        elif child.tag == f"{_W}tbl":
            yield _docx_table(child)


def _docx_paragraph(p: Any) -> str:
    return "".join(run.text for run in _docx_runs(p))


def _docx_runs(element: Any) -> Iterator[Any]:
    # Walk all descendants so runs inside hyperlinks, insertions, fields and text boxes count,
    # but skip mc:Fallback, which repeats the text box content of the mc:Choice next to it.
    for child in element.iterchildren():
        if child.tag == _MC_FALLBACK:
            continue
        if child.tag == f"{_W}r":
            yield child
        yield from _docx_runs(child)


def _docx_table(tbl: Any) -> str:
    rows = []
    for tr in _docx_children(tbl):
        if tr.tag != f"{_W}tr":
            continue
        cells = []
        # Iterating w:tc elements (not python-docx's row.cells, which repeats merged cells) gives
        # each merged cell once; vMerge continuation cells are placeholders and normally empty.
        for tc in _docx_children(tr):
            if tc.tag != f"{_W}tc":
                continue
            cell = "\n".join(b for b in _docx_blocks(tc) if b.strip()).strip()
            if cell:
                cells.append(cell)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


# --- PDF ---

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})  # fmt: skip


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's logging and warnings for the duration of one load, then restore them."""
    logger = logging.getLogger("pypdf")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(previous)


def _load_pdf(path: Path | str, password: str | None, ocr: str = "auto",
              ocr_progress: Callable[[int, int], None] | None = None) -> Loaded:
    _check_readable(path)
    with _quiet_pypdf():
        return _read_pdf(path, password, ocr, ocr_progress)


def _read_pdf(path: Path | str, password: str | None, ocr: str = "auto",
              ocr_progress: Callable[[int, int], None] | None = None) -> Loaded:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    source = str(path)
    try:
        reader = PdfReader(str(path), strict=False)
    except Exception as exc:  # EmptyFileError, PdfReadError, PdfStreamError, ...
        raise LoadError(path, f"not a readable PDF ({_describe_pdf_error(exc)})") from exc

    if reader.is_encrypted:
        # "" opens files that only have an owner (permissions) password.
        candidates = [password, ""] if password else [""]
        try:
            opened = any(reader.decrypt(candidate) for candidate in candidates)
        except DependencyError as exc:
            raise LoadError(
                path, "encrypted PDF needs the 'cryptography' package (pip install 'pypdf[crypto]')"
            ) from exc
        except Exception as exc:
            raise LoadError(path, f"encrypted PDF could not be decrypted ({_describe(exc)})") from exc
        if not opened:
            raise LoadError(path, "encrypted PDF: wrong or missing password (use --password)")

    try:
        page_count = len(reader.pages)
    except Exception as exc:
        raise LoadError(path, f"not a readable PDF ({_describe_pdf_error(exc)})") from exc
    if page_count == 0:
        return Loaded(documents=[], pages=0, warnings=[f"{source}: PDF has no pages, nothing ingested"])
    title = _pdf_title(reader)

    documents: list[Document] = []
    empty: list[int] = []
    garbage: list[int] = []
    failed: list[int] = []
    first_failure = ""
    for number in range(1, page_count + 1):
        try:
            raw = reader.pages[number - 1].extract_text() or ""
        except Exception as exc:
            failed.append(number)
            first_failure = first_failure or _describe(exc)
            continue
        text = repair_cjk_spaces(_normalise(raw).translate(_LIGATURES)).strip()
        if ocr == "always":
            empty.append(number)
        elif not text:
            empty.append(number)
        elif looks_like_garbage(text):
            garbage.append(number)
        else:
            documents.append(Document(page_content=text, metadata=_metadata(source, page=number, title=title)))

    warns = []
    ocr_note = "OCR is not done"
    to_read = sorted(empty + garbage + failed)
    if ocr != "never" and to_read:
        from rag.loaders import ocr as ocr_engine

        if ocr_engine.available():
            used_password = password if reader.is_encrypted else None
            done_pages = iter(range(1, len(to_read) + 1))
            on_page = (lambda _number: ocr_progress(next(done_pages), len(to_read))) if ocr_progress else None
            if ocr_progress:
                ocr_progress(0, len(to_read))  # OCR starts: the first page alone may take seconds
            result = ocr_engine.ocr_pdf_pages(path, to_read, password=used_password, progress=on_page)
            warns.extend(result.warnings)
            for number, text in result.pages.items():
                text = repair_cjk_spaces(_normalise(text)).strip()
                if text and not looks_like_garbage(text):
                    documents.append(Document(page_content=text, metadata={**_metadata(source, page=number, title=title), "ocr": True}))
            documents.sort(key=lambda d: d.metadata["page"])
            done = set(result.pages)
            if done:
                warns.append(f"{source}: {_plural(len(done), 'page')} read by OCR (pages {_page_list(sorted(done))})")
            empty = [n for n in empty if n not in done]
            garbage = [n for n in garbage if n not in done]
            failed = [n for n in failed if n not in done]
            ocr_note = "OCR found no text"
        else:
            ocr_note = "OCR is not installed: pip install 'rag[ocr]'"
    if ocr == "always":
        empty = []
    if failed:
        warns.append(
            f"{source}: text extraction failed on {_plural(len(failed), 'page')} of {page_count} "
            f"(pages {_page_list(failed)}; {_one_line(first_failure, 120)}); skipped"
        )
    if garbage:
        rest = f", nothing ingested; {ocr_note}" if not documents else ""
        warns.append(
            f"{source}: unreadable text layer (font without Unicode map or bad OCR) on "
            f"{_plural(len(garbage), 'page')} of {page_count} (pages {_page_list(garbage)}); dropped{rest}"
        )
    if empty and len(empty) == page_count:
        warns.append(
            f"{source}: no text layer on any of {_plural(page_count, 'page')} (scanned or vector-only PDF); "
            f"{ocr_note}, nothing ingested"
        )
    elif empty:
        warns.append(
            f"{source}: {_plural(len(empty), 'page')} of {page_count} had no text (pages {_page_list(empty)}; "
            f"blank, scanned or vector-only; {ocr_note})"
        )
    return Loaded(documents=documents, pages=page_count, warnings=warns)


def _describe_pdf_error(exc: BaseException) -> str:
    # pypdf's own messages ("startxref not found", "Cannot read an empty file") are already clear.
    message = _one_line(str(exc), 150)
    return message or type(exc).__name__


def _pdf_title(reader: Any) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata else None
    except Exception:  # broken /Info dictionaries are common and not worth failing the file for
        return None
    if not title:
        return None
    title = " ".join(str(title).replace("\x00", "").split())
    return title or None


# --- regexes used by the PDF heuristics -------------------------------------------------------

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


_LOADERS: dict[str, Callable[[Path | str, str | None], Loaded]] = {
    ".pdf": _load_pdf,
    ".txt": _load_text,
    ".md": _load_text,
    ".markdown": _load_text,
    ".html": _load_html,
    ".htm": _load_html,
    ".docx": _load_docx,
}
