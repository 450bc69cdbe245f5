"""Reading Word .docx files: paragraphs and tables (as Markdown) in document order, looking through content
controls, text boxes and hyperlinks, with each merged table cell once."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.loaders.common import LoadError, Loaded, check_readable, describe, single_document
from rag.loaders.tables import is_data_table, markdown_table

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"


def load_docx(path: Path | str, password: str | None) -> Loaded:
    check_readable(path)
    if not zipfile.is_zipfile(path):
        # python-docx would only say "Package not found"; a .docx is a zip archive.
        raise LoadError(path, "not a readable .docx (not a valid zip archive: truncated, corrupt or not a .docx)")
    import docx

    try:
        document = docx.Document(str(path))
    except Exception as exc:  # BadZipFile, PackageNotFoundError, KeyError, XMLSyntaxError, ...
        raise LoadError(path, f"not a readable .docx ({describe(exc)})") from exc
    blocks = [b for b in _docx_blocks(document.element.body) if b.strip()]
    text = "\n\n".join(blocks).strip()
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:  # a broken core.xml should not cost us the body text
        title = ""
    return single_document(str(path), text, title=title, empty="no text in this .docx")


def _docx_children(element: Any) -> Iterator[Any]:
    """Children, looking through content controls and custom XML wrappers, which carry no text of their own."""
    for child in element.iterchildren():
        if child.tag in (f"{_W}sdt", f"{_W}customXml"):
            content = child.find(f"{_W}sdtContent")
            yield from _docx_children(content if content is not None else child)
        else:
            yield child


def _docx_blocks(container: Any, nested: bool = False) -> Iterator[str]:
    """Paragraph and table texts of a body or table cell, in document order; a table inside a cell
    (`nested`) is flattened, since a Markdown table cell cannot hold a table."""
    for child in _docx_children(container):
        if child.tag == f"{_W}p":
            yield _docx_paragraph(child)
        elif child.tag == f"{_W}tbl":
            rows = _docx_rows(child)
            flat = nested or not is_data_table(rows)
            yield "\n".join(" | ".join(c for c in row if c) for row in rows) if flat else markdown_table(rows)


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


def _docx_rows(tbl: Any) -> list[list[str]]:
    """A table's rows of cell texts, a merged cell once followed by empty cells for the grid columns it spans
    (so the columns stay aligned), a vertically merged continuation cell empty."""
    rows = []
    for tr in _docx_children(tbl):
        if tr.tag != f"{_W}tr":
            continue
        cells: list[str] = []
        # Iterating w:tc elements (not python-docx's row.cells, which repeats merged cells) gives
        # each merged cell once; vMerge continuation cells are placeholders and normally empty.
        for tc in _docx_children(tr):
            if tc.tag != f"{_W}tc":
                continue
            cells.append("\n".join(b for b in _docx_blocks(tc, nested=True) if b.strip()).strip())
            cells.extend([""] * (_grid_span(tc) - 1))
        if any(cells):
            rows.append(cells)
    return rows


def _grid_span(tc: Any) -> int:
    span = tc.find(f"{_W}tcPr/{_W}gridSpan")
    value = span.get(f"{_W}val") if span is not None else None
    return int(value) if value and value.isdigit() else 1
