"""OCR of scanned PDFs, offline, with RapidOCR's packaged models (the `ocr` extra)."""

import re
import resource
import time
from collections import Counter
from pathlib import Path

import pytest

from rag.loaders import ocr
from rag.loaders import load_file
from tests.conftest import rag_with

pytestmark = pytest.mark.skipif(not ocr.available(), reason="the ocr extra is not installed (pip install 'rag[ocr]')")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(reference: list, found: list) -> float:
    ref, got = Counter(reference), Counter(found)
    return sum(min(c, got[w]) for w, c in ref.items()) / sum(ref.values())


def test_scanned_page_is_read_and_marked(shared):
    loaded = load_file(shared / "docs/scanned/huckfinn-c03-29-scan.pdf")
    (doc,) = loaded.documents
    assert doc.metadata["page"] == 1 and doc.metadata["ocr"] is True
    assert "WELL, I got a good going-over in the morning" in doc.page_content
    assert "Miss Watson" in doc.page_content
    assert any("read by OCR" in w for w in loaded.warnings)


def test_scanned_page_character_error_rate():
    """The Huck Finn page shipped in data/ against a transcription made from the scan itself (the 1885
    edition's words and punctuation, which differ from Project Gutenberg's text): at most 1% CER."""
    from tests.conftest import DATA

    (doc,) = load_file(DATA / "scanned/huckfinn-c03-29-scan.pdf").documents
    reference = (Path(__file__).parent / "references/huckfinn-c03-29.txt").read_text(encoding="utf-8")
    assert ocr.character_error_rate(reference, doc.page_content) <= 0.01
    # The measure itself: a page of nothing, or of other words, is far off.
    assert ocr.character_error_rate(reference, "") == 1.0
    assert ocr.character_error_rate(reference, reference.upper()) > 0.5


def test_two_columns_come_out_in_reading_order(shared):
    folder = shared / "bad_inputs/pdf_no_text"
    (doc,) = load_file(folder / "linn-scan.pdf").documents
    reference = words((folder / "linn.txt").read_text())
    found = words(doc.page_content)
    assert recall(reference, found) >= 0.95
    # Word pairs survive only if the columns are not interleaved line by line.
    pairs = lambda ws: list(zip(ws, ws[1:]))  # noqa: E731
    assert recall(pairs(reference), pairs(found)) >= 0.9


def test_ocr_never_and_always(shared):
    path = shared / "docs/scanned/huckfinn-c03-29-scan.pdf"
    never = load_file(path, ocr="never")
    assert never.documents == [] and "OCR is not done" in never.warnings[0]
    always = load_file(shared / "bad_inputs/pdf_no_text/no_contents.pdf", ocr="always")
    assert always.documents == []  # nothing to read, and no crash


def test_decompression_bomb_is_refused_quickly_in_bounded_memory(shared):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loaded = load_file(shared / "bad_inputs/pdf_huge/hugemono-35000px.pdf")
    seconds = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert loaded.documents == []
    assert any("35000x35000 pixels exceeds the OCR limit" in w for w in loaded.warnings)
    assert all("\n" not in w for w in loaded.warnings)
    assert grown_mb < 500 and seconds < 60, (grown_mb, seconds)  # bounds, not a benchmark


def test_reading_order_on_synthetic_boxes():
    w = 1000
    left = [(50, 100 + 40 * i, 450, 130 + 40 * i, f"L{i}") for i in range(5)]
    right = [(550, 100 + 40 * i, 950, 130 + 40 * i, f"R{i}") for i in range(5)]
    title = [(50, 20, 950, 60, "TITLE")]
    text = ocr.reading_order(title + right + left, w)
    assert text.split("\n") == ["TITLE"] + [f"L{i}" for i in range(5)] + [f"R{i}" for i in range(5)]
    one_column = [(50, 100 + 40 * i, 950, 130 + 40 * i, f"line{i}") for i in range(3)]
    assert ocr.reading_order(one_column, w) == "line0\nline1\nline2"
    assert ocr.reading_order([(0, 0, 100, 20, "hyphen-"), (0, 30, 100, 50, "ated word")], w) == "hyphenated word"


def test_scanned_folder_is_answerable(shared, tmp_path, embeddings):
    rag = rag_with(tmp_path / "store", embeddings, model="smollm2-135m", max_tokens=40)
    report = rag.ingest(shared / "docs/scanned")
    assert len(report.ingested) == 1 and report.chunks >= 2
    docs = rag.retriever.invoke("Who scolded Huck about his clothes, and who cleaned off the grease and clay?")
    assert docs[0].metadata["ocr"] is True and docs[0].metadata["page"] == 1
    answer = rag.ask("What did Miss Watson do in the closet?")
    assert any(s.source.endswith("huckfinn-c03-29-scan.pdf") and s.page == 1 for s in answer.context)


@pytest.mark.parametrize("reader", ["process", "thread"])
def test_ocr_reports_progress_page_by_page(tmp_path, embeddings, reader):
    """OCR takes seconds a page: ingest reports each OCR'd page (the CLI shows it in its progress bar), from
    the reader process as well as from a reader thread."""
    from rag.ingest import Ingestor
    from tests.conftest import DATA

    folder = tmp_path / "docs"
    folder.mkdir()
    scan = folder / "scan.pdf"
    scan.write_bytes((DATA / "scanned/huckfinn-c03-29-scan.pdf").read_bytes())
    (folder / "note.md").write_text("# Note\n\nA second file, so that the reader process is used.\n", encoding="utf-8")
    rag = rag_with(tmp_path / "store", embeddings)
    events = []
    ingestor = Ingestor(rag.store, rag.embeddings, rag.splitter, rag.fingerprint, reader=reader)
    report = ingestor.run([folder], progress=lambda event, value: events.append((event, value)))
    assert not report.failed and len(report.ingested) == 2
    assert [v for e, v in events if e == "ocr"] == [(str(scan), 0, 1), (str(scan), 1, 1)]
    # the page is reported before its file is done
    assert events.index(("ocr", (str(scan), 1, 1))) < events.index(("file", scan))
