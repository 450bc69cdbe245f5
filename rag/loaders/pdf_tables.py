"""Ruled tables on PDF pages, found by pdfplumber and written into the page's pypdf text as Markdown tables at
their place in reading order (the table's own cells taken out of the text, the rest of the page as pypdf reads it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rag.loaders.tables import is_data_table, markdown_table

# Path-painting operators: "x y w h re" (rectangle), "x y l" (line), and "Do" (a form XObject may draw them).
# A page whose content has none of them has no ruling lines, so pdfplumber (several times pypdf's cost a page)
# is not asked about it.
_DRAWS = re.compile(rb"(?:\sre|\d\s+l|\sDo)\s")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # a table set apart by one blank line, not three
_MARGIN = 1.0  # points: text starting on a table's edge belongs to the table


def may_hold_table(page: Any) -> bool:
    """Whether a pypdf page draws any lines or rectangles (a ruled table needs them)."""
    try:
        contents = page.get_contents()
        return bool(contents is not None and _DRAWS.search(contents.get_data()))
    except Exception:  # a content stream pypdf cannot decode: let pdfplumber have its own look
        return True


class TableFinder:
    """pdfplumber over one PDF, opened on the first page asked about; each page's data tables as
    (bounding box, Markdown), top to bottom."""

    def __init__(self, path: Path | str, password: str | None) -> None:
        self.path = path
        self.password = password
        self._pdf: Any = None

    def tables(self, number: int) -> list[tuple[tuple[float, float, float, float], str]]:
        import pdfplumber

        if self._pdf is None:
            self._pdf = pdfplumber.open(str(self.path), password=self.password or "")
        page = self._pdf.pages[number - 1]
        try:
            found = []
            for table in page.find_tables():
                rows = [[cell or "" for cell in row] for row in table.extract()]
                if is_data_table(rows) and not _text_beside(page, table.bbox, len(rows)):
                    found.append((tuple(table.bbox), markdown_table(rows)))
            return sorted(found, key=lambda item: item[0][1])
        finally:
            page.close()  # pdfplumber keeps every parsed object of a page until told

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()


def _text_beside(page: Any, bbox: tuple[float, float, float, float], rows: int) -> bool:
    """Whether text stands left or right of the table on its rows: then the rules cover only some columns of a
    wider table (the Debian Reference rules all but the first), and the page's plain text, a row a line, is
    better than a table that lost a column."""
    x0, top, x1, bottom = bbox
    beside = sum(1 for c in page.chars if c["top"] >= top and c["bottom"] <= bottom and (c["x1"] <= x0 or c["x0"] >= x1)
                 and c["text"].strip())
    return beside >= rows


def text_with_tables(page: Any, tables: list[tuple[tuple[float, float, float, float], str]]) -> str:
    """The page's pypdf text with each table's cells replaced by its Markdown, where the table begins."""
    box = page.mediabox
    left, top = float(box.left), float(box.top)
    fragments: list[tuple[float, float, str]] = []
    position = (0.0, 0.0)

    def visit(text: str, cm: Any, tm: Any, _font: Any, _size: Any) -> None:
        nonlocal position
        if text.strip():  # line breaks come with a stale matrix: they belong where the text before them is
            position = (tm[4] * cm[0] + tm[5] * cm[2] + cm[4] - left, top - (tm[4] * cm[1] + tm[5] * cm[3] + cm[5]))
        fragments.append((*position, text))

    page.extract_text(visitor_text=visit)
    parts: list[str] = []
    placed: set[int] = set()
    for x, y, text in fragments:
        inside = next((i for i, (bbox, _md) in enumerate(tables) if _within(x, y, bbox)), None)
        if inside is None:
            parts.append(text)
        elif inside not in placed:  # the table goes where its first cell's text was
            parts.append(f"\n\n{tables[inside][1]}\n\n")
            placed.add(inside)
    parts.extend(f"\n\n{markdown}\n\n" for i, (_bbox, markdown) in enumerate(tables) if i not in placed)
    return _BLANK_LINES.sub("\n\n", "".join(parts))


def _within(x: float, y: float, bbox: tuple[float, float, float, float]) -> bool:
    x0, top, x1, bottom = bbox
    return x0 - _MARGIN <= x <= x1 + _MARGIN and top - _MARGIN <= y <= bottom + _MARGIN
