"""Tables kept whole: a .docx, an HTML and a PDF table each read as a Markdown table, the splitter cutting only
between rows (a long table's header repeated on each piece), and table rows found and answered from a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from rag.loaders import load_file
from rag.models import packaged as models
from rag.splitting import Splitter, token_counter
from tests.conftest import rag_with

COUNT = token_counter(models.embedding_model_path("all-MiniLM-L6-v2"))
WORDS = lambda text: len(text.split())  # noqa: E731  a token counter whose counts a reader can check by eye

DOCX_TABLE = (
    "| Port | Service | Owner |\n"
    "| --- | --- | --- |\n"
    "| 8443 | billing gateway | Marisol Quint |\n"
    "| 9187 | inventory sync | Tobias Ekwueme |\n"
    "| 7311 | audit archive | Priya Vandersloot |"
)
HTML_TABLE = (
    "| Reactor | Coolant | Output (MW) |\n"
    "| --- | --- | --- |\n"
    "| Kestrel-2 | heavy water | 640 |\n"
    "| Osprey-5 | molten salt | 1175 |\n"
    "| Heron-9 \\| B | helium gas | 310 |"
)
# debian-reference.en.pdf, printed page 23 (file page 51): "Table 1.16: List of basic Vim keystrokes", ruled.
PDF_TABLE_START = (
    "| mode | keystrokes | action |\n"
    "| --- | --- | --- |\n"
    "| NORMAL | :help\\|only | displaythehelpfile |\n"
    "| NORMAL | :e filename.ext | opennewbuffertoeditfilename.ext |\n"
)
PDF_TABLE_END = "| TERMINAL-JOB | Ctrl-W: | entertheEx-modeinTERMINAL-NORMAL mode |\n\nTable1.16: ListofbasicVimkeystrokes"


def _rules(text: str) -> int:
    """How many Markdown tables (header rules) a text holds."""
    return sum(line.startswith("| --- |") for line in text.split("\n"))


def _docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("Service ports of the Lakeside data centre.")
    rows = [line.strip("| ").split(" | ") for line in DOCX_TABLE.split("\n") if "---" not in line]
    table = document.add_table(rows=len(rows), cols=3)
    for cells, row in zip(rows, table.rows):
        for text, cell in zip(cells, row.cells):
            cell.text = text
    document.add_paragraph("Ports are reviewed every quarter.")
    document.save(path)
    return path


def _html(path: Path) -> Path:
    path.write_text(
        "<html><head><title>Reactors</title></head><body><h1>Reactor fleet</h1>"
        "<table><caption>Fleet summary</caption><thead><tr><th>Reactor</th><th>Coolant</th><th>Output (MW)</th></tr>"
        "</thead><tbody><tr><td>Kestrel-2</td><td>heavy <b>water</b></td><td>640</td></tr>"
        "<tr><td>Osprey-5</td><td>molten salt</td><td>1175</td></tr>"
        "<tr><td>Heron-9 | B</td><td>helium\n gas</td><td>310</td></tr></tbody></table>"
        "<p>Figures are nameplate capacity.</p></body></html>",
        encoding="utf-8",
    )
    return path


def _pdf(shared: Path, path: Path) -> Path:
    """Pages 50-52 of the Debian Reference PDF (a ruled table on the middle one) as a 3-page file."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(shared / "docs/en/debian-reference.en.pdf")
    writer = PdfWriter()
    for number in (50, 51, 52):
        writer.add_page(reader.pages[number - 1])
    writer.write(path)
    return path


def test_docx_table_is_a_markdown_table(tmp_path: Path) -> None:
    (doc,) = load_file(_docx(tmp_path / "ports.docx")).documents
    assert doc.page_content == (
        f"Service ports of the Lakeside data centre.\n\n{DOCX_TABLE}\n\nPorts are reviewed every quarter."
    )


def test_html_table_is_a_markdown_table_with_its_caption(tmp_path: Path) -> None:
    (doc,) = load_file(_html(tmp_path / "fleet.html")).documents
    assert doc.page_content == (
        f"Reactor fleet\n\nFleet summary\n\n{HTML_TABLE}\n\nFigures are nameplate capacity."
    )


def test_pdf_table_is_a_markdown_table_on_its_page(shared: Path, tmp_path: Path) -> None:
    loaded = load_file(_pdf(shared, tmp_path / "vim.pdf"))
    assert [d.metadata["page"] for d in loaded.documents] == [1, 2, 3]
    middle = loaded.documents[1].page_content
    assert middle.startswith("DebianReference 23/ 233\n\n" + PDF_TABLE_START)
    assert PDF_TABLE_END in middle
    assert _rules(middle) == 1
    assert _rules(loaded.documents[0].page_content + loaded.documents[2].page_content) == 0
    # Off, the same page is pypdf's plain text, the cells run together as before.
    plain = load_file(tmp_path / "vim.pdf", pdf_tables=False).documents[1].page_content
    assert "| --- |" not in plain and "NORMAL :help|only displaythehelpfile" in plain


def test_a_table_that_fits_stays_in_one_chunk_with_its_caption() -> None:
    table = "| name | size |\n| --- | --- |\n| apt | 4211 |\n| dpkg | 5989 |"
    doc = Document(f"Packages.\nTable 2.1 tools\n{table}\nAfter the table.", metadata={"source": "t.md"})
    chunks = [c.page_content for c in Splitter(WORDS, chunk_size=30, chunk_overlap=0).split([doc])]
    assert chunks == [f"Packages.\nTable 2.1 tools\n\n{table}\n\nAfter the table."]


def test_a_long_table_is_cut_between_rows_under_its_header() -> None:
    rows = "\n".join(f"| pkg{i} | {i} |" for i in range(1, 8))
    doc = Document(f"Intro text here.\n\nTable 1. Packages\n\n| name | size |\n| --- | --- |\n{rows}\n\nAfter the table.",
                   metadata={"source": "t.md"})
    chunks = [c.page_content for c in Splitter(WORDS, chunk_size=30, chunk_overlap=5).split([doc])]
    assert chunks == [
        "Intro text here.\n\nTable 1. Packages",
        "Table 1. Packages\n\n| name | size |\n| --- | --- |\n| pkg1 | 1 |\n| pkg2 | 2 |\n| pkg3 | 3 |",
        "| name | size |\n| --- | --- |\n| pkg4 | 4 |\n| pkg5 | 5 |\n| pkg6 | 6 |",
        "| name | size |\n| --- | --- |\n| pkg7 | 7 |\n\nAfter the table.",
    ]


def test_a_row_longer_than_a_chunk_is_the_only_thing_cut_and_keeps_the_header() -> None:
    doc = Document("| a | b |\n| --- | --- |\n| " + "word " * 40 + "| x |\n| c | d |", metadata={"source": "t.md"})
    chunks = [c.page_content for c in Splitter(WORDS, chunk_size=30, chunk_overlap=0).split([doc])]
    assert chunks == [
        "| a | b |\n| --- | --- |\n| " + "word " * 16 + "word",
        "| a | b |\n| --- | --- |\n" + "word " * 17 + "word",
        "| a | b |\n| --- | --- |\n" + "word " * 5 + "| x |\n| c | d |",
    ]


@pytest.fixture(scope="module")
def table_rag(tmp_path_factory, embeddings, shared: Path):
    """The three table files ingested into a real store, answering with the small packaged model."""
    folder = tmp_path_factory.mktemp("tables")
    _docx(folder / "ports.docx"), _html(folder / "fleet.html"), _pdf(shared, folder / "vim.pdf")
    # min_score 0: the answer test is about reading a row, not about the relevance threshold.
    rag = rag_with(tmp_path_factory.mktemp("store"), embeddings, model="smollm2-135m", max_tokens=32, min_score=0.0)
    report = rag.ingest(folder)
    assert not report.failed, report.failed
    return rag


def test_no_stored_chunk_holds_part_of_a_row(table_rag) -> None:
    rows = [line for table in (DOCX_TABLE, HTML_TABLE, PDF_TABLE_START) for line in table.split("\n")[2:] if line]
    texts = [d.page_content for d in table_rag.retriever.invoke("keystrokes reactor coolant port owner")]
    texts += [d.page_content for q in ("vim keystrokes mode action", "molten salt", "billing gateway")
              for d in table_rag.retriever.invoke(q)]
    for text in texts:
        for line in text.split("\n"):
            if line.startswith("|"):
                assert line.endswith("|"), line  # a row begun in a chunk ends in it
    assert all(any(row in text for text in texts) for row in rows)


@pytest.mark.parametrize(("question", "row", "page"), [
    ("Which port does the billing gateway use?", "| 8443 | billing gateway | Marisol Quint |", None),
    ("What coolant does the Osprey-5 reactor use?", "| Osprey-5 | molten salt | 1175 |", None),
    ("Which vim keystroke enters the REPLACE mode?", "| NORMAL | R | entertheREPLACEmode |", 2),
])
def test_the_top_passages_hold_the_answer_row_and_its_page(table_rag, question: str, row: str, page) -> None:
    top = table_rag.retriever.invoke(question)[:4]
    hits = [d for d in top if row in d.page_content]
    assert [d.metadata.get("page") for d in hits][:1] == [page]
    assert _rules(hits[0].page_content) == 1  # the row under its header


def test_the_small_model_is_shown_the_answer_row_under_its_header(table_rag) -> None:
    # End to end through the chain with the small model. SmolLM2-135M answers "The audit archive service is owned
    # by [2]." (citing the right passage, not naming the owner), so what is checked is what it was given: the row.
    answer = table_rag.ask("Who owns the audit archive service?")
    shown = [s.text for s in answer.context if "| 7311 | audit archive | Priya Vandersloot |" in s.text]
    assert [_rules(text) for text in shown] == [1]
    assert answer.refused_by is None


def _table_rows(rag) -> int:
    """Markdown table rows ("| ... |" lines) in the chunks the store holds for its one file."""
    (record,) = rag.store.files()
    texts = [text for text, _meta, _score in rag.store.get(record.chunk_ids).values()]
    return sum(line.startswith("| ") and line.endswith(" |") for text in texts for line in text.split("\n"))


def test_pdf_tables_setting_layers(tmp_path: Path) -> None:
    from rag.config import Settings

    assert Settings.load(config_file=None, env={}).pdf_tables is True
    (tmp_path / "rag.toml").write_text("pdf_tables = false\n")
    assert Settings.load(config_file=tmp_path / "rag.toml", env={}).pdf_tables is False
    assert Settings.load(config_file=None, env={"RAG_PDF_TABLES": "0"}).pdf_tables is False
    assert Settings.load(config_file=None, env={"RAG_PDF_TABLES": "0"}, overrides={"pdf_tables": True}).pdf_tables is True


def test_pdf_tables_off_stores_plain_text_and_switching_it_re_reads_the_pdf(shared: Path, tmp_path: Path,
                                                                              embeddings) -> None:
    pdf = _pdf(shared, tmp_path / "vim.pdf")
    off = rag_with(tmp_path / "store", embeddings, pdf_tables=False)
    assert off.ingest(pdf).ingested == [str(pdf)]
    assert _table_rows(off) == 0
    assert off.ingest(pdf).unchanged == [str(pdf)]  # the same setting: not read again
    off.store.close()
    on = rag_with(tmp_path / "store", embeddings)
    assert on.ingest(pdf).ingested == [str(pdf)]  # switched on: the PDF is read again, now with its table
    assert _table_rows(on) == 25  # the table's rows, its header repeated over each chunk of it
    on.store.close()
    assert rag_with(tmp_path / "store", embeddings, pdf_tables=False).ingest(pdf).ingested == [str(pdf)]
