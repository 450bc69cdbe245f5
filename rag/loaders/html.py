"""Reading HTML: the charset a page declares (as browsers read it), then its visible text with block elements
as line and paragraph breaks, data tables as Markdown tables and layout tables' cells separated by " | "."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

from rag.loaders.common import Loaded, read_bytes, single_document
from rag.loaders.tables import is_data_table, markdown_table
from rag.loaders.text import decode_bytes

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
# A cell holding these (or two paragraphs) is a page laid out in a table, not a row of data.
_LAYOUT_IN_CELL = ("table", "pre", "ul", "ol", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "form")


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


def load_html(path: Path | str, password: str | None) -> Loaded:
    data = read_bytes(path)
    markup = decode_bytes(data, path, declared=_declared_html_charset(data))
    text, title = html_to_text(markup)
    return single_document(str(path), text, title=title, empty="no text in this HTML file")


def html_to_text(markup: str) -> tuple[str, str | None]:
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
            if name == "table" and (table := _markdown_of(node)):
                out.brk(2)
                out.text(table, True)
                out.brk(2)
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


def _markdown_of(table: Any) -> str:
    """A data table as Markdown (its caption on the line above), or "" for a layout table, which is then read as
    text like the rest of the page."""
    if table.get("role") in ("presentation", "none"):
        return ""
    rows = []
    for tr in table.find_all("tr"):
        cells: list[str] = []
        for cell in tr.find_all(("td", "th"), recursive=False):
            if cell.find(_LAYOUT_IN_CELL) or len(cell.find_all(("p", "div"))) > 1:
                return ""
            cells.append(cell.get_text(" "))
            span = str(cell.get("colspan", "1")).strip()
            cells.extend([""] * (min(int(span), 50) - 1 if span.isdigit() and int(span) > 1 else 0))
        rows.append(cells)
    if not is_data_table(rows):
        return ""
    caption = table.find("caption")
    title = " ".join(caption.get_text(" ").split()) if caption else ""
    return (title + "\n\n" if title else "") + markdown_table(rows)


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
