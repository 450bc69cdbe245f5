"""Tables as Markdown: the one format every loader (HTML, .docx, PDF) writes a table in, so that the splitter can
keep rows whole and repeat a table's header, and the model sees rows and columns instead of a run of cells."""

from __future__ import annotations

import re
from collections.abc import Sequence

_SPACE = re.compile(r"\s+")


def cell_text(text: str | None) -> str:
    """One Markdown cell: whitespace (line breaks included) collapsed, "|" escaped so it cannot end the cell."""
    return _SPACE.sub(" ", text or "").strip().replace("|", "\\|")


def is_data_table(rows: Sequence[Sequence[str]]) -> bool:
    """Whether rows of cell texts hold a table worth keeping as one: two or more rows with text, one of them with
    text in two or more cells. Otherwise it is a frame or a layout box around text (a code listing, a "Note" box
    with its icon), not data."""
    filled = [sum(1 for cell in row if cell.strip()) for row in rows]
    return sum(1 for n in filled if n) >= 2 and max(filled, default=0) >= 2


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cell texts as a Markdown table, the first row as its header; short rows padded with empty cells
    (merged cells come out once) and rows without any text dropped."""
    cleaned = [[cell_text(cell) for cell in row] for row in rows]
    cleaned = [row for row in cleaned if any(cleaned_cell for cleaned_cell in row)]
    if not cleaned:
        return ""
    width = max(len(row) for row in cleaned)
    padded = [row + [""] * (width - len(row)) for row in cleaned]
    lines = [_row_line(padded[0]), _row_line(["---"] * width)]
    lines.extend(_row_line(row) for row in padded[1:])
    return "\n".join(lines)


def _row_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
