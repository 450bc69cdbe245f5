"""Tests for rag.loaders: real files only (generated in tmp_path, or the shared corpus in ../shared)."""

from __future__ import annotations

import functools
import gzip
import io
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag.loaders import (
    SUPPORTED_SUFFIXES,
    Loaded,
    LoadError,
    load_file,
    looks_like_garbage,
    read_text_file,
    repair_cjk_spaces,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
BAD = CORPUS / "bad_inputs"

CJK_GAP = re.compile(r"[\u4e00-\u9fff]\s+[\u4e00-\u9fff]")

ZH_SIMPLIFIED = (
    "中华人民共和国是位于东亚的社会主义国家，首都北京。全国共划分为二十三个省、五个自治区、四个直辖市和两个特别行政区。"
    "中国是世界上人口最多的国家之一，拥有悠久的历史和灿烂的文化。汉字是世界上最古老的文字之一，至今仍在广泛使用。\n"
)
ZH_TRADITIONAL = (
    "中華民國是位於東亞的民主共和國，首都臺北。臺灣擁有豐富的自然資源和多元的文化傳統。"
    "漢字是世界上最古老的文字之一，繁體字在臺灣、香港及澳門等地區仍然廣泛使用。這篇文章簡單介紹了當地的歷史與風俗習慣。\n"
)
MIXED = "Python 是一种编程语言。It was created by Guido van Rossum in 1991.\n它的设计哲学强调代码的可读性。\n"
ENGLISH = "Hello world.\nThis is plain English text, used for testing the decoder.\n" * 3
# Only ASCII and Latin Extended-A: as BOM-less UTF-16/32 every byte is < 0x80, so it is valid UTF-8.
POLISH = "Wąska ścieżka prowadziła przez łąkę, a nad nią świeciło słońce.\n" * 2


def corpus(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"../shared not present: {path}")
    return path


@functools.cache
def cached_load(relative: str, password: str | None = None) -> Loaded:
    # The big PDFs take seconds; several tests look at the same result (tests must not mutate it).
    return load_file(corpus(relative), password=password)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def only_text(loaded: Loaded) -> str:
    assert len(loaded.documents) == 1
    return loaded.documents[0].page_content


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF with one Helvetica text line per input line (no PDF library needed)."""
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>", b""]
    font_id, pages_id = 1, 2
    page_ids = []
    for text in pages:
        ops = ["BT /F1 12 Tf 14 TL 72 720 Td"]
        for line in text.split("\n"):
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        contents_id = len(objects)
        objects.append(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
            b"/Contents %d 0 R >>" % (pages_id, font_id, contents_id)
        )
        page_ids.append(len(objects))
    kids = b" ".join(b"%d 0 R" % i for i in page_ids)
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    objects.append(b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id)
    catalog_id = len(objects)
    info = b""
    if title:
        objects.append(b"<< /Title (%s) >>" % title.encode("latin-1"))
        info = b" /Info %d 0 R" % len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog_id, info, xref)
    )
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-" + user_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- API basics -------------------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == frozenset({".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".docx"})


def test_load_error_carries_path_and_reason_and_pickles() -> None:
    err = LoadError(Path("/x/y.pdf"), "broken\n  badly")
    assert err.path == Path("/x/y.pdf")
    assert err.reason == "broken badly"
    assert str(err) == "/x/y.pdf: broken badly"
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.reason == err.reason


def test_import_is_cheap() -> None:
    code = (
        "import sys, rag.loaders; heavy = [m for m in ('pypdf', 'docx', 'bs4', 'charset_normalizer', "
        "'langchain_community') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "slides.pptx", b"PK\x03\x04junk")
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: unsupported file type .pptx"
    with pytest.raises(LoadError, match="no suffix"):
        load_file(write(tmp_path, "README", b"hello"))


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "NOTES.TXT", b"Upper-case suffix still loads.")
    assert only_text(load_file(path)) == "Upper-case suffix still loads."


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for name in ("missing.txt", "missing.pdf", "missing.docx", "missing.html"):
        with pytest.raises(LoadError, match="file not found"):
            load_file(tmp_path / name)
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(LoadError, match="directory"):
        load_file(folder)


def test_source_metadata_is_the_path_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "a.md", b"# Title\n\nBody")
    as_str = load_file(str(path)).documents[0].metadata
    as_path = load_file(path).documents[0].metadata
    assert as_str == {"source": str(path)}  # no page / title keys: Chroma cannot store None
    assert as_path == {"source": str(path)}


# --- text decoding (generated files) ----------------------------------------------------------


@pytest.mark.parametrize("text", [ENGLISH, POLISH, MIXED, ZH_SIMPLIFIED], ids=["english", "polish", "mixed", "chinese"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_utf32_without_bom(tmp_path: Path, text: str, encoding: str) -> None:
    path = write(tmp_path, "doc.txt", text.encode(encoding))
    assert read_text_file(path) == text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32", "utf-16-be", "utf-32-be"])
def test_with_bom(tmp_path: Path, encoding: str) -> None:
    # Characters outside the BMP tell UTF-32-LE from UTF-16-LE (whose BOM is a prefix of it).
    text = MIXED + "Emoji 😀 and CJK extension B 𠀋.\n"
    data = text.encode(encoding)
    if encoding.endswith("-be"):  # Python adds no BOM for explicit byte orders
        data = ("\ufeff" + text).encode(encoding)
    assert read_text_file(write(tmp_path, "doc.txt", data)) == text


def test_utf16_be_is_not_mistaken_for_utf8(tmp_path: Path) -> None:
    data = ENGLISH.encode("utf-16-be")
    assert "\x00" in data.decode("utf-8")  # the trap: valid UTF-8, full of NULs
    result = read_text_file(write(tmp_path, "doc.txt", data))
    assert result == ENGLISH and "\x00" not in result


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("He said “hello” – it costs 5 € … a naïve café façade.\n", "cp1252"),
        ("Grüße aus München: Äpfel, Öl und Übermut. Ça va très bien, señor.\n", "latin-1"),
        ("L'été était très chaud cette année; el niño comió ñoquis.\n", "cp1252"),
        ("Zażółć gęślą jaźń. Wśród łąk i pól płynęła rzeka, a nad nią świeciło słońce.\n", "cp1250"),
        ("Съешь же ещё этих мягких французских булок, да выпей чаю.\n", "cp1251"),
    ],
    ids=["cp1252-quotes-euro", "latin1", "cp1252-french-spanish", "cp1250-polish", "cp1251-russian"],
)
def test_single_byte_encodings(tmp_path: Path, text: str, encoding: str) -> None:
    assert read_text_file(write(tmp_path, "doc.txt", text.encode(encoding))) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (ZH_SIMPLIFIED, "gb2312"),
        (ZH_SIMPLIFIED, "gbk"),
        (ZH_SIMPLIFIED, "gb18030"),
        (ZH_TRADITIONAL, "gbk"),
        (ZH_TRADITIONAL, "big5"),
        (MIXED, "gbk"),
        (ZH_SIMPLIFIED[:8], "gbk"),  # short: charset-normalizer alone calls this Korean
        (ZH_TRADITIONAL[:8], "big5"),
        ("Python（派森）语言", "gbk"),  # short: charset-normalizer alone calls these UTF-16-BE
        ("臺灣擁有豐富的自然資源", "big5"),
    ],
)
def test_chinese_legacy_encodings(tmp_path: Path, text: str, encoding: str) -> None:
    assert read_text_file(write(tmp_path, "doc.txt", text.encode(encoding))) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("日本語のテキストです。これはシフトJISでエンコードされています。", "shift_jis"),
        ("日本語のテキストです。これはEUC-JPでエンコードされています。", "euc-jp"),
        ("한국어 텍스트입니다. 이것은 EUC-KR로 인코딩되었습니다.", "euc-kr"),
    ],
)
def test_japanese_and_korean_are_not_taken_for_chinese(tmp_path: Path, text: str, encoding: str) -> None:
    assert read_text_file(write(tmp_path, "doc.txt", text.encode(encoding))) == text


def test_big5_is_not_decoded_as_gb18030(tmp_path: Path) -> None:
    data = ZH_TRADITIONAL.encode("big5")
    assert data.decode("gb18030") != ZH_TRADITIONAL  # the trap: decodes without error, into garbage
    result = read_text_file(write(tmp_path, "doc.txt", data))
    assert result == ZH_TRADITIONAL


def test_newlines_normalised_and_nuls_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "doc.txt", b"one\r\ntwo\rthree\nfo\x00ur" + b" padding" * 20)
    assert read_text_file(path) == "one\ntwo\nthree\nfour" + " padding" * 20


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("log.txt", gzip.compress(b"hello " * 200), "gzip"),
        ("doc.txt", make_pdf(["hello"]), "PDF"),
        ("notes.md", b"PK\x03\x04\x14\x00\x00\x00" + bytes(range(256)) * 4, "zip"),
        ("blob.txt", bytes(range(256)) * 16, "binary content"),
        ("nuls.txt", b"abc\x00\x00\x01\x02def\x00\x00\x00" * 50, "binary content"),
    ],
    ids=["gzip", "pdf", "zip", "random", "nuls"],
)
def test_binary_under_text_suffix(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(LoadError) as info:
        load_file(path)
    message = str(info.value)
    assert expected in message and "binary content" in message
    assert message.startswith(f"{path}: ") and "\n" not in message


@pytest.mark.parametrize("data", [b"", b" \n\t\r\n  "], ids=["empty", "whitespace"])
def test_empty_text_file_is_a_warning_not_an_error(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "empty.txt", data)
    loaded = load_file(path)
    assert loaded.documents == [] and loaded.pages == 1
    assert loaded.warnings == [f"{path}: empty file"]


def test_markdown_text_kept_verbatim(tmp_path: Path) -> None:
    text = "# Title\n\nSome *markdown* with `code`.\n\n- item one\n- item two"
    loaded = load_file(write(tmp_path, "doc.markdown", text.encode()))
    assert only_text(loaded) == text and loaded.warnings == []


# --- HTML (generated) -------------------------------------------------------------------------


def test_html_structure(tmp_path: Path) -> None:
    html = """<!DOCTYPE html><html><head><title> My  Page </title><style>p { color: red }</style>
    <script>var secret = "do not index";</script></head>
    <body><!-- a comment --><h1>Heading</h1>
    <p>First   paragraph
       wraps here.</p><p>Second<br>line two</p>
    <ul><li>alpha</li><li>beta</li></ul>
    <table><tr><th>name</th><th>size</th></tr><tr><td>apt</td><td>4211</td></tr></table>
    <pre>  indented
    code</pre><noscript>enable js</noscript></body></html>"""
    loaded = load_file(write(tmp_path, "page.html", html.encode()))
    doc = loaded.documents[0]
    assert doc.metadata == {"source": str(tmp_path / "page.html"), "title": "My Page"}
    text = doc.page_content
    assert text.startswith("Heading\n\nFirst paragraph wraps here.\n\nSecond\nline two\n\nalpha\nbeta")
    assert "| name | size |\n| --- | --- |\n| apt | 4211 |" in text  # a data table comes out as Markdown
    assert "  indented\n    code" in text
    for junk in ("color: red", "do not index", "a comment", "enable js", "<p>", "DOCTYPE"):
        assert junk not in text
    assert "\n\n\n" not in text


def test_html_meta_charset_is_honoured(tmp_path: Path) -> None:
    html = '<html><head><meta charset="gbk"><title>标题</title></head><body><p>' + ZH_SIMPLIFIED + "</p></body></html>"
    loaded = load_file(write(tmp_path, "zh.htm", html.encode("gbk")))
    assert loaded.documents[0].metadata["title"] == "标题"
    assert only_text(loaded) == ZH_SIMPLIFIED.strip()


def test_html_meta_charset_beats_detection(tmp_path: Path) -> None:
    sentence = "Le prix: 5 € pour une Œuvre complète."
    # Byte for byte this is also valid cp1252, which detection prefers for undeclared text.
    plain = write(tmp_path, "latin9.txt", sentence.encode("iso-8859-15"))
    assert read_text_file(plain) == "Le prix: 5 ¤ pour une ¼uvre complète."
    html = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-15"></head>'
    html += f"<body><p>{sentence}</p></body></html>"
    loaded = load_file(write(tmp_path, "latin9.html", html.encode("iso-8859-15")))
    assert only_text(loaded) == sentence


def test_html_bom_beats_meta(tmp_path: Path) -> None:
    html = "<html><head><meta charset='utf-8'><title>Datenblatt</title></head><body><p>Größe: 5 €</p></body></html>"
    loaded = load_file(write(tmp_path, "bom.html", html.encode("utf-16")))  # BOM + UTF-16 LE
    assert only_text(loaded) == "Größe: 5 €"


def test_html_wrong_meta_falls_back_to_detection(tmp_path: Path) -> None:
    html = '<html><head><meta charset="utf-8"></head><body><p>Café crème, 5 € – “quoted”</p></body></html>'
    loaded = load_file(write(tmp_path, "liar.html", html.encode("cp1252")))
    assert only_text(loaded) == "Café crème, 5 € – “quoted”"


def test_html_without_text(tmp_path: Path) -> None:
    path = write(
        tmp_path, "blank.html", b"<html><head><title>t</title><script>x=1</script></head><body> </body></html>"
    )
    loaded = load_file(path)
    assert loaded.documents == []
    assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith(f"{path}: ")


# --- DOCX (generated) -------------------------------------------------------------------------


def test_docx_paragraphs_tables_merged_and_nested(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Generated"
    document.add_paragraph("Intro paragraph.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"r{r}c{c}"
    table.cell(0, 0).merge(table.cell(0, 1))  # horizontal merge
    table.cell(1, 2).merge(table.cell(2, 2))  # vertical merge
    nested = table.cell(2, 0).add_table(rows=1, cols=2)
    nested.cell(0, 0).text = "inner-left"
    nested.cell(0, 1).text = "inner-right"
    document.add_paragraph("Closing paragraph.")
    path = tmp_path / "gen.docx"
    document.save(path)

    loaded = load_file(path)
    doc = loaded.documents[0]
    assert doc.metadata == {"source": str(path), "title": "Generated"}
    text = doc.page_content
    assert text.startswith("Intro paragraph.") and text.endswith("Closing paragraph.")
    assert text.index("Intro") < text.index("r1c0") < text.index("inner-left") < text.index("Closing")
    for word in ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2", "r2c2", "inner-left", "inner-right"):
        # python-docx's row.cells would repeat merged cells; every cell's text must appear once.
        assert text.count(word) == 1, word


def test_docx_empty_and_broken(tmp_path: Path) -> None:
    import docx

    empty = tmp_path / "empty.docx"
    docx.Document().save(empty)
    loaded = load_file(empty)
    assert loaded.documents == [] and loaded.warnings == [f"{empty}: no text in this .docx"]

    fake = write(tmp_path, "fake.docx", b"just some text, not a zip")
    with pytest.raises(LoadError, match=r"not a readable \.docx"):
        load_file(fake)
    truncated = write(tmp_path, "cut.docx", empty.read_bytes()[:3000])
    with pytest.raises(LoadError, match=r"not a readable \.docx"):
        load_file(truncated)


# --- PDF (generated) --------------------------------------------------------------------------


def test_pdf_pages_metadata_and_empty_pages(tmp_path: Path) -> None:
    path = write(
        tmp_path, "gen.pdf", make_pdf(["Hello page one\nsecond line", "", "Third page (with parens)"], title="Gen")
    )
    loaded = load_file(path)
    assert loaded.pages == 3
    assert [d.metadata for d in loaded.documents] == [
        {"source": str(path), "page": 1, "title": "Gen"},
        {"source": str(path), "page": 3, "title": "Gen"},
    ]
    assert loaded.documents[0].page_content == "Hello page one\nsecond line"
    assert loaded.documents[1].page_content == "Third page (with parens)"
    assert len(loaded.warnings) == 1
    assert loaded.warnings[0].startswith(f"{path}: 1 page of 3 had no text") and "OCR" in loaded.warnings[0]


def test_pdf_without_any_text(tmp_path: Path) -> None:
    path = write(tmp_path, "blank.pdf", make_pdf(["", ""]))
    loaded = load_file(path, ocr="never")
    assert loaded.documents == [] and loaded.pages == 2
    assert loaded.warnings == [
        f"{path}: no text layer on any of 2 pages (scanned or vector-only PDF); OCR is not done, nothing ingested"
    ]


def test_pdf_garbage_page_dropped(tmp_path: Path) -> None:
    junk = "F n e m b h e h k Z d\nI n k g m Z q r s t u v"
    path = write(tmp_path, "junk.pdf", make_pdf(["A normal page of English text about packages.", junk]))
    loaded = load_file(path)
    assert [d.metadata["page"] for d in loaded.documents] == [1]
    assert len(loaded.warnings) == 1
    assert loaded.warnings[0].startswith(f"{path}: unreadable text layer") and "1 page of 2" in loaded.warnings[0]


def test_pdf_encrypted_generated(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pdf", encrypt_pdf(make_pdf(["Top secret text"]), "s3cret"))
    for password in (None, "wrong"):
        with pytest.raises(LoadError) as info:
            load_file(path, password=password)
        assert str(info.value) == f"{path}: encrypted PDF: wrong or missing password (use --password)"
    assert only_text(load_file(path, password="s3cret")) == "Top secret text"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"%PDF-1.4\n%%EOF\n", "startxref"), (b"not a pdf at all" * 10, "")],
    ids=["zero-bytes", "header-only", "text"],
)
def test_pdf_corrupt_generated(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path, "bad.pdf", data)
    with pytest.raises(LoadError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable PDF (") and reason in message and "\n" not in message


def test_pdf_truncated_generated(tmp_path: Path) -> None:
    data = make_pdf([f"Page {i} has some words on it." for i in range(30)])
    path = write(tmp_path, "cut.pdf", data[: len(data) // 2])
    try:
        loaded = load_file(path)  # pypdf may rebuild the xref and recover some pages: fine
    except LoadError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
    else:
        assert all(d.page_content.strip() for d in loaded.documents)


# --- heuristics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'F n e m b \\ h e h k \x03 ; e Z \\ d\nI n k ^ \x03 ; e Z \\ d \x03 ! D \x03 6 \x03 * ) ) "\n'
        "I n k ^ \x03 F Z ` ^ g m Z",
        "/g437/g258",
        '"7+%-',
        "\ue000\ue001\ue002\ue003 \ue004\ue005",
        "Title\x01\x02 Te\x03xt wi\x04th con\x05trol \x06chars \x07here",
        "«POAH «3E*»CM tanntxim. inc. /^. ^\ntoi n»Bfl. iseorty ttsrootj saifii, GROTE, nut, s*r;tiiR» and\n"
        "FRG&t OSZ H. USSSOBS\nA letter from the Aaalggfitted fc-ugsx Company eecepting 3s«»teership and the "
        "Calif&rr-.la. and A&s-oeiete© and H^uid Sugars, Inc. and the Sevennah £ug»r Refining",
    ],
    ids=["offset-font", "glyph-names", "symbol-soup", "private-use", "control-chars", "bad-ocr"],
)
def test_looks_like_garbage_true(text: str) -> None:
    assert looks_like_garbage(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "The Debian package management system, when used properly, offers the user to install packages.",
        "Replaceitwiththefollowingtotrack testing.\nSetthe”/etc/apt/preferences”fileasthefollowing.",
        "引导加载程序是启动过程的第二阶段，由 UEFI 启动。引导加载程序将系统内核映像和initrd 映像加载到内存。",
        "Lorem ipsum dolor sit amet, consetetur sadipscing elitr, sed diam nonumy eirmod tempor invidunt ut labore",
        "> x <- c(1, 2, 3)\n> y <- x^2 * 3\n> lm(y ~ A*B + x, data = d)\n[1] 1 4 9\n> a b c d e f",
        "Copyright c© 1990 W. N. Venables\nCopyright c© 1992 W. N. Venables & D. M. Smith\n"
        "Copyright c© 1997 R. Gentleman",
        "pdf encryption test\npassword: asdfzxcv",
    ],
    ids=["empty", "page-number", "english", "pypdf-no-spaces", "chinese", "lorem", "r-code", "copyright", "short"],
)
def test_looks_like_garbage_false(text: str) -> None:
    assert not looks_like_garbage(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("系 统", "系统"),
        ("为 Debian 系\n统的使用与\n管理提供", "为 Debian 系统的使用与管理提供"),
        ("引导加载程 序 说明", "引导加载程序说明"),
        ("例 如 vfat、 ext4", "例如 vfat、 ext4"),
        ("中文，\n数据", "中文，数据"),
        ("使用 Linux 内核 and 2 个", "使用 Linux 内核 and 2 个"),
        ("日本語 の テキスト", "日本語のテキスト"),
        ("한국어 텍스트", "한국어 텍스트"),  # Korean separates words with spaces: keep them
        ("第一\u3000第二", "第一\u3000第二"),  # ideographic space is deliberate layout
        ("plain English text", "plain English text"),
    ],
)
def test_repair_cjk_spaces(raw: str, expected: str) -> None:
    assert repair_cjk_spaces(raw) == expected


# --- shared corpus: text and HTML -------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "twin", "codec"),
    [
        ("gbk.txt", "gbk-utf8.txt", "gbk"),
        ("gb2312.txt", "gb2312-utf8.txt", "gb2312"),
        ("gb18030.txt", "gb18030-utf8.txt", "gb18030"),
    ],
)
def test_corpus_gb_encodings(encoded: str, twin: str, codec: str) -> None:
    path = corpus(f"bad_inputs/encodings/{encoded}")
    expected = corpus(f"bad_inputs/encodings/{twin}").read_text(encoding="utf-8")
    assert path.read_bytes().decode(codec) == expected  # fixture sanity
    assert read_text_file(path) == expected


def test_corpus_debian_gbk_chapter() -> None:
    result = read_text_file(corpus("bad_inputs/encodings/debian-reference-ch01.zh-cn.gbk.txt"))
    expected = corpus("bad_inputs/encodings/debian-reference-ch01.zh-cn.utf8.txt").read_text(encoding="utf-8")
    assert len(result) == len(expected)
    # Characters GBK cannot encode became '?': those are the only differences allowed.
    differences = [(a, b) for a, b in zip(result, expected, strict=True) if a != b]
    assert all(a == "?" for a, _ in differences)
    assert len(differences) <= 0.005 * len(expected)
    assert "控制台基础" in result


def test_corpus_big5() -> None:
    path = corpus("bad_inputs/encodings/big5-wikipedia-classical-chinese.txt")
    raw = path.read_bytes()
    result = read_text_file(path)
    assert result == raw.decode("big5")
    assert result != raw.decode("gb18030", errors="replace")
    assert "維基大典" in result and "百科" in result


@pytest.mark.parametrize("name", ["utf-16-bom.txt", "utf-16-be.txt", "utf-32.txt"])
def test_corpus_utf16_utf32_text(name: str) -> None:
    loaded = load_file(corpus(f"bad_inputs/text/{name}"))
    text = only_text(loaded)
    assert text.startswith("This is a test document to use for unit tests.")
    assert "Doylestown, PA 18901" in text and "Hamburgers are delicious" in text and "\x00" not in text


def test_corpus_latin1_markdown() -> None:
    assert only_text(load_file(corpus("bad_inputs/text/latin1-umlauts.md"))) == "## können\n\nkönnen\n\näöüß"


def test_corpus_cp1252_html() -> None:
    text = only_text(load_file(corpus("bad_inputs/text/cp1252.html")))
    assert text.startswith("My First Heading\n\nMy first paragraph.")
    for phrase in ("Der Preis betrug 15,50 €.", "köstlich", "L'été était très chaud", "El niño comió",
                   "O João comprou", "Kvinnan åt köttbullar"):  # fmt: skip
        assert phrase in text, phrase


def test_corpus_utf16_html() -> None:
    loaded = load_file(corpus("bad_inputs/text/utf-16-datasheet.html"))
    doc = loaded.documents[0]
    assert doc.metadata["title"] == "SNB22-3 - SteelJIS - Datasheet, Chemical composition, Standards and Properties"
    assert "Chemical composition" in doc.page_content and "日本語" in doc.page_content
    assert "adsbygoogle" not in doc.page_content and "font-family" not in doc.page_content


@pytest.mark.parametrize("name", ["empty.txt", "all-whitespace.txt"])
def test_corpus_empty_text(name: str) -> None:
    path = corpus(f"bad_inputs/text/{name}")
    loaded = load_file(path)
    assert loaded.documents == [] and loaded.warnings == [f"{path}: empty file"]


@pytest.mark.parametrize(("name", "expected"), [("binary-gzip-named.txt", "gzip"), ("pdf-named.txt", "PDF")])
def test_corpus_binary_named_txt(name: str, expected: str) -> None:
    path = corpus(f"bad_inputs/text/{name}")
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: binary content, not text") and expected in str(info.value)


def test_corpus_hex_one_line() -> None:
    path = corpus("bad_inputs/text/jpeg-hex-one-line.txt")
    loaded = load_file(path)
    assert only_text(loaded).startswith("ffd8ffe0")
    assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith(f"{path}: contains a 82804-character run")


def test_corpus_patriot_act_pre_html() -> None:
    loaded = load_file(corpus("docs/en/usa-patriot-act-pl107-56.htm"))
    text = only_text(loaded)
    assert "title" not in loaded.documents[0].metadata
    assert len(text) > 300_000
    assert "UNITING AND STRENGTHENING AMERICA BY PROVIDING APPROPRIATE TOOLS" in text
    assert "<DOC>" in text  # &lt;DOC&gt; in the source: entities decoded, real tags gone
    assert "<pre>" not in text and "</body>" not in text and "\n\n\n" not in text


@pytest.mark.parametrize(
    ("name", "title", "phrase"),
    [
        (
            "docs/en/debian-reference_ch02.en.html",
            "Chapter 2. Debian package management",
            "Advanced Packaging Tool (APT)",
        ),
        ("docs/zh/debian-reference_ch02.zh-cn.html", "第 2 章 Debian 软件包管理", "软件包"),
    ],
)
def test_corpus_debian_html(name: str, title: str, phrase: str) -> None:
    doc = load_file(corpus(name)).documents[0]
    assert doc.metadata["title"] == title
    text = doc.page_content
    assert phrase in text and len(text) > 30_000
    assert "<div" not in text and "<a " not in text and "\n\n\n" not in text
    assert "dpkg | V:" in text  # package tables keep their rows: "dpkg | V:919, I:999 | ..."


# --- shared corpus: DOCX ----------------------------------------------------------------------


def test_corpus_tables_only_docx() -> None:
    text = only_text(load_file(corpus("bad_inputs/docx/tables-only.docx")))
    for phrase in ("| Header Col 1 | Header Col 2 |", "| Lorem ipsum | A link example |", "g&t", "Table with merged cells"):
        assert phrase in text, phrase
    merged = text[text.index("Table with merged cells") :]
    # python-docx's row.cells yields a, b, b / a, c, d / e, e, d here; each merged cell must appear once, the
    # cells it spans (or continues into) empty, so that the columns stay aligned.
    assert merged.split("\n", 2)[2] == "| a | b |  |\n| --- | --- | --- |\n|  | c | d |\n| e |  |  |"


def test_corpus_normal_docx() -> None:
    text = only_text(load_file(corpus("docs/en/doj-ch13-trustee-handbook-1p.docx")))
    assert text.startswith("CHAPTER 1")
    assert "The United States Trustee appoints and supervises standing trustees" in text


def test_corpus_broken_docx_and_pptx() -> None:
    truncated = corpus("bad_inputs/docx/handbook-1p.truncated.docx")
    with pytest.raises(LoadError) as info:
        load_file(truncated)
    assert str(info.value).startswith(f"{truncated}: not a readable .docx (")
    pptx = corpus("bad_inputs/docx/malformed.pptx")
    with pytest.raises(LoadError) as info:
        load_file(pptx)
    assert str(info.value) == f"{pptx}: unsupported file type .pptx"


# --- shared corpus: PDF -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "password", "phrase"),
    [
        ("r2-user-password.pdf", "asdfzxcv", "pdf encryption test"),
        ("r4-aes-user-password.pdf", "asdfzxcv", "pdf encryption test"),
        ("r6-user-password.pdf", "asdfzxcv", "pdf encryption test"),
        ("crazyones-encrypted-256.pdf", "password", "The Crazy Ones"),
        ("libreoffice-writer-password.pdf", "openpassword", "Lorem ipsum dolor sit amet"),
    ],
)
def test_corpus_encrypted_with_password(name: str, password: str, phrase: str) -> None:
    path = corpus(f"bad_inputs/pdf_encrypted/{name}")
    loaded = load_file(path, password=password)
    assert phrase in loaded.documents[0].page_content
    assert loaded.documents[0].metadata["page"] == 1


@pytest.mark.parametrize("name", ["r2-user-password.pdf", "crazyones-encrypted-256.pdf", "unstructured-password.pdf"])
def test_corpus_encrypted_wrong_password(name: str) -> None:
    path = corpus(f"bad_inputs/pdf_encrypted/{name}")
    with pytest.raises(LoadError) as info:
        load_file(path, password="definitely-wrong")
    assert str(info.value) == f"{path}: encrypted PDF: wrong or missing password (use --password)"


@pytest.mark.parametrize(
    "name",
    ["r2-user-password.pdf", "r4-aes-user-password.pdf", "crazyones-encrypted-256.pdf",
     "libreoffice-writer-password.pdf", "unstructured-password.pdf"],
)  # fmt: skip
def test_corpus_encrypted_without_password(name: str) -> None:
    path = corpus(f"bad_inputs/pdf_encrypted/{name}")
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: encrypted PDF: wrong or missing password (use --password)"


def test_corpus_owner_password_only_pdfs_open_without_password() -> None:
    loaded = load_file(corpus("bad_inputs/pdf_encrypted/copy-protected-owner-only.pdf"))
    assert loaded.pages == 2 and len(loaded.documents) == 2
    assert "LayoutParser" in loaded.documents[0].page_content
    assert "Unified" in loaded.documents[0].page_content  # the 'ﬁ' ligature is spelled out
    # r6's owner password is empty, so '' opens it (as owner): no password needed.
    assert "pdf encryption test" in only_text(load_file(corpus("bad_inputs/pdf_encrypted/r6-user-password.pdf")))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.pdf", "Cannot read an empty file"),
        ("invalid.pdf", "startxref not found"),
        ("R-data.truncated50.pdf", "Stream has ended unexpectedly"),
        ("unreadablemetadata.pdf", "Invalid object in /Pages"),
    ],
)
def test_corpus_corrupt_pdfs(name: str, reason: str) -> None:
    path = corpus(f"bad_inputs/pdf_corrupt/{name}")
    with pytest.raises(LoadError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: not a readable PDF ({reason})"


@pytest.mark.parametrize(
    "relative",
    [
        "bad_inputs/pdf_no_text/linn-scan.pdf",
        "bad_inputs/pdf_no_text/no_contents.pdf",
        "bad_inputs/pdf_no_text/trivial.pdf",
        "bad_inputs/pdf_no_text/vector-text-as-curves.pdf",
        "bad_inputs/pdf_huge/enormous-page.pdf",
        "bad_inputs/pdf_huge/hugemono-35000px.pdf",
        "docs/scanned/huckfinn-c03-29-scan.pdf",
    ],
)
def test_corpus_pdfs_without_text(relative: str) -> None:
    path = corpus(relative)
    loaded = load_file(path, ocr="never")
    assert loaded.documents == [] and loaded.pages == 1
    assert loaded.warnings == [
        f"{path}: no text layer on any of 1 page (scanned or vector-only PDF); OCR is not done, nothing ingested"
    ]


@pytest.mark.parametrize(
    "name", ["bad-ocr-layer.pdf", "cmyk-garbage-text.pdf", "truetype_font_nomapping.pdf", "type3_font_nomapping.pdf"]
)
def test_corpus_garbage_text_pdfs(name: str) -> None:
    from pypdf import PdfReader

    path = corpus(f"bad_inputs/pdf_bad_text/{name}")
    assert PdfReader(path).pages[0].extract_text().strip()  # there *is* a text layer, it is junk
    loaded = load_file(path, ocr="never")
    assert loaded.documents == [] and loaded.pages == 1
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert warning.startswith(f"{path}: unreadable text layer") and "1 page of 1" in warning and "OCR" in warning


def test_corpus_pypdf_logging_is_silenced(caplog: pytest.LogCaptureFixture) -> None:
    pypdf_logger = logging.getLogger("pypdf")
    level_before = pypdf_logger.level
    caplog.set_level(logging.DEBUG)
    load_file(corpus("bad_inputs/pdf_bad_text/cmyk-garbage-text.pdf"))  # pypdf logs ~50 cmap warnings
    with pytest.raises(LoadError):
        load_file(corpus("bad_inputs/pdf_corrupt/unreadablemetadata.pdf"))  # and "rebuild xref" here
    assert [r for r in caplog.records if r.name.startswith("pypdf")] == []
    assert pypdf_logger.level == level_before


@pytest.mark.parametrize(
    ("relative", "pages"),
    [("docs/en/R-intro.pdf", 113), ("docs/en/R-data.pdf", 41), ("docs/en/R-FAQ.pdf", 52)],
)
def test_corpus_r_manuals_keep_every_page(relative: str, pages: int) -> None:
    loaded = cached_load(relative)
    assert loaded.pages == pages
    assert [d.metadata["page"] for d in loaded.documents] == list(range(1, pages + 1))
    assert loaded.warnings == []


def test_corpus_debian_reference_en_pdf() -> None:
    path = corpus("docs/en/debian-reference.en.pdf")
    loaded = cached_load("docs/en/debian-reference.en.pdf")
    assert loaded.pages == 261
    # Page 1 is a cover without text; at most two more pages may be lost to the garbage heuristic.
    assert len(loaded.documents) >= 258
    assert all(
        d.metadata["source"] == str(path) and d.metadata["title"] == "Debian Reference" for d in loaded.documents
    )
    pages = [d.metadata["page"] for d in loaded.documents]
    # The cover has no text layer: OCR reads it (when the ocr extra is installed), the rest is text.
    assert pages == sorted(pages) and pages[0] in (1, 2)
    assert [d.metadata["page"] for d in loaded.documents if d.metadata.get("ocr")] in ([], [1])
    assert not any("unreadable text layer" in w for w in loaded.warnings)
    # pypdf drops inter-word spaces in this file; that text is still English and must be kept.
    assert any("Replaceitwiththefollowing" in d.page_content for d in loaded.documents)


def test_corpus_debian_reference_zh_pdf_cjk_spaces() -> None:
    from pypdf import PdfReader

    path = corpus("docs/zh/debian-reference.zh-cn.pdf")
    raw = PdfReader(path).pages[2].extract_text()
    assert "系\n统" in raw  # the problem being repaired is really there

    loaded = cached_load("docs/zh/debian-reference.zh-cn.pdf")
    assert loaded.pages == 251 and len(loaded.documents) >= 248
    assert not any("unreadable text layer" in w for w in loaded.warnings)
    page3 = next(d.page_content for d in loaded.documents if d.metadata["page"] == 3)
    assert "为 Debian 系统的使用与管理提供广泛的概览" in page3  # gaps gone, CJK-Latin spaces kept
    gaps = sum(len(CJK_GAP.findall(d.page_content)) for d in loaded.documents)
    assert gaps == 0
    assert sum(d.page_content.count("Debian 系统") for d in loaded.documents) > 50


def test_corpus_docs_folder_all_load() -> None:
    docs = CORPUS / "docs"
    if not docs.exists():
        pytest.skip(f"../shared not present: {docs}")
    for path in sorted(p for p in docs.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES):
        relative = str(path.relative_to(CORPUS))
        loaded = cached_load(relative) if path.suffix == ".pdf" else load_file(path)
        if "scanned" in relative:
            assert all(d.metadata.get("ocr") for d in loaded.documents), relative  # only OCR finds text
        else:
            assert loaded.documents, relative
            assert all(d.page_content.strip() for d in loaded.documents), relative


# --- every bad input: LoadError or a result, never anything else -------------------------------

BAD_FILES = sorted(p for p in BAD.rglob("*") if p.is_file()) if BAD.exists() else []


@pytest.mark.parametrize("path", BAD_FILES or [None], ids=[str(p.relative_to(BAD)) for p in BAD_FILES] or ["absent"])
def test_every_bad_input_is_handled(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"../shared not present: {BAD}")
    try:
        loaded = load_file(path)
    except LoadError as err:
        message = str(err)
        assert "\n" not in message and path.name in message
        assert err.path == path
        return
    assert isinstance(loaded, Loaded) and loaded.pages >= 1
    for warning in loaded.warnings:
        assert "\n" not in warning and path.name in warning
    for doc in loaded.documents:
        assert doc.page_content.strip()
        assert doc.metadata["source"] == str(path)
        assert all(isinstance(v, (str, int)) for v in doc.metadata.values())  # Chroma-compatible, no None


def test_ocr_always_without_ocr_installed_is_a_one_line_error(monkeypatch):
    # OCR's absence is simulated (the CI install has it): every page would go to OCR, so the file must fail
    # with a reason instead of giving no documents and no warning.
    from rag.loaders import ocr as ocr_engine

    monkeypatch.setattr(ocr_engine, "available", lambda: False)
    pdf = Path(__file__).resolve().parents[1] / "data" / "R-FAQ.pdf"
    with pytest.raises(LoadError) as info:
        load_file(pdf, ocr="always")
    assert str(info.value) == f"{pdf}: --ocr always needs OCR, which is not installed: pip install 'rag[ocr]'"
