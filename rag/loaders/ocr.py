"""OCR for PDF pages without a usable text layer: render with pypdfium2 at the scan's own resolution, read
with RapidOCR (models shipped in its wheel, run by onnxruntime, offline), and put lines in reading order."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Bounds that keep a hostile or huge PDF from taking gigabytes or hours (the 35000x35000 px JBIG2 "bomb").
MAX_IMAGE_PIXELS = 100_000_000  # an embedded image larger than this is not decoded at all
MAX_RENDER_PIXELS = 36_000_000  # a page is rendered at most this large (scale reduced to fit)
TILE_HEIGHT = 2400  # pages are rendered and read in horizontal strips of this many pixels
DEFAULT_DPI = 200.0  # for pages whose images do not say (vector drawings)
MAX_DPI = 400.0


_HYPHEN_BREAK = re.compile(r"(?<=[a-z])-\n(?=[a-z])")


class OCRUnavailable(Exception):
    """The OCR extra is not installed."""


@dataclass
class OCRResult:
    """Text per page number (1-based) and one-line warnings."""

    pages: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


_ENGINE = None


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("rapidocr", "pypdfium2"))


def _engine():
    global _ENGINE
    if _ENGINE is None:
        if not available():
            raise OCRUnavailable("OCR needs the ocr extra: pip install 'rag[ocr]'")
        from rapidocr import RapidOCR

        # Only the models inside the wheel: the default config names them, and nothing here may download.
        _ENGINE = RapidOCR(params={"Global.log_level": "critical"})
    return _ENGINE


def ocr_pdf_pages(path: Path | str, pages: list[int], password: str | None = None,
                  progress: Callable[[int], None] | None = None) -> OCRResult:
    """OCR the given pages of a PDF."""
    import pypdfium2 as pdfium

    result = OCRResult()
    pdf = pdfium.PdfDocument(str(path), password=password)
    try:
        for number in pages:
            page = pdf[number - 1]
            try:
                text, warning = _ocr_page(page)
            finally:
                page.close()
            if warning:
                result.warnings.append(f"{path}: page {number}: {warning}")
            if text.strip():
                result.pages[number] = text
            if progress:
                progress(number)
    finally:
        pdf.close()
    return result


def _page_scale(page) -> tuple[float, str]:
    """Render scale (pixels per point) matching the page's largest image; a reason string when refused."""
    import pypdfium2.raw as pdfium_c

    scale = DEFAULT_DPI / 72
    best_area = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        w_px, h_px = obj.get_px_size()
        if w_px * h_px > MAX_IMAGE_PIXELS:
            return 0.0, f"an embedded image of {w_px}x{h_px} pixels exceeds the OCR limit ({MAX_IMAGE_PIXELS // 1_000_000} MP); page not read"
        left, bottom, right, top = obj.get_bounds()
        area = (right - left) * (top - bottom)
        if area > best_area and right > left:
            best_area = area
            scale = w_px / (right - left)
    return min(scale, MAX_DPI / 72), ""


def _ocr_page(page) -> tuple[str, str]:
    import numpy as np

    scale, refusal = _page_scale(page)
    if refusal:
        return "", refusal
    width_pt, height_pt = page.get_size()
    if width_pt * height_pt * scale * scale > MAX_RENDER_PIXELS:
        scale = (MAX_RENDER_PIXELS / (width_pt * height_pt)) ** 0.5
    width_px, height_px = int(width_pt * scale), int(height_pt * scale)
    tile_pt = TILE_HEIGHT / scale
    lines: list[tuple[float, float, float, float, str]] = []
    top_pt = 0.0
    while top_pt < height_pt:
        bottom_pt = min(height_pt, top_pt + tile_pt)
        # crop = (left, bottom, right, top) amounts cut away, in points
        bitmap = page.render(scale=scale, grayscale=True, crop=(0, height_pt - bottom_pt, 0, top_pt))
        img = bitmap.to_numpy()
        bitmap.close()
        gray = img if img.ndim == 2 else img[..., 0]
        if gray.std() > 2.0:  # a blank strip has nothing to read
            rgb = np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
            out = _engine()(rgb)
            offset = top_pt * scale
            for box, txt in zip(out.boxes if out.boxes is not None else [], out.txts or []):
                xs, ys = [p[0] for p in box], [p[1] + offset for p in box]
                lines.append((min(xs), min(ys), max(xs), max(ys), txt))
        top_pt = bottom_pt
    return reading_order(lines, width_px), ""


def reading_order(boxes: list[tuple[float, float, float, float, str]], page_width: float) -> str:
    """Join OCR'd text boxes (x0, y0, x1, y1, text) in reading order, columns one after the other.

    Wide boxes (headings, full-width paragraphs) cut the page into bands; in each band a vertical gap that
    no narrow box crosses separates columns, which are read left to right, each top to bottom."""
    if not boxes:
        return ""
    wide = [b for b in boxes if b[2] - b[0] > 0.55 * page_width]
    edges = sorted({b[1] for b in wide})
    narrow = [b for b in boxes if b not in wide]
    # Bands between consecutive wide boxes.
    cuts = [float("-inf"), *edges, float("inf")]
    out_blocks: list[list[tuple]] = []
    for lo, hi in zip(cuts, cuts[1:]):
        band = [b for b in narrow if lo <= (b[1] + b[3]) / 2 < hi]
        out_blocks.extend(_columns(band, page_width))
        out_blocks.extend([[b] for b in wide if b[1] == hi])
    text_lines: list[str] = []
    for block in out_blocks:
        text_lines.extend(_lines(block))
    # Words hyphenated at a line end ("func-" / "tion") are joined again.
    return _HYPHEN_BREAK.sub("", "\n".join(text_lines))


def _columns(band: list[tuple], page_width: float) -> list[list[tuple]]:
    if not band:
        return []
    # How many boxes cover each x; a gutter is a run that (almost) no box crosses. A few crossings are
    # tolerated: a short single-column passage (a bullet list) above the columns may straddle the gutter.
    covered = [0] * (int(page_width) + 2)
    for x0, _, x1, _, _ in band:
        for x in range(max(0, int(x0)), min(len(covered), int(x1) + 1)):
            covered[x] += 1
    allowed = max(1, len(band) // 15)
    lo, hi = int(page_width * 0.2), int(page_width * 0.8)
    best, start = (0, 0), None
    for x in range(lo, hi + 1):
        free = covered[x] <= allowed
        if free and start is None:
            start = x
        if (not free or x == hi) and start is not None:
            if x - start > best[1] - best[0]:
                best = (start, x)
            start = None
    if best[1] - best[0] < 0.008 * page_width:
        return [band]
    split = (best[0] + best[1]) / 2
    left = [b for b in band if (b[0] + b[2]) / 2 < split]
    right = [b for b in band if (b[0] + b[2]) / 2 >= split]
    if len(left) < 3 or len(right) < 3:
        return [band]
    return [left, right]


def _lines(block: list[tuple]) -> list[str]:
    """Group boxes of one column into lines (vertical overlap), each read left to right."""
    rows: list[list[tuple]] = []
    for box in sorted(block, key=lambda b: (b[1] + b[3]) / 2):
        mid = (box[1] + box[3]) / 2
        if rows and abs(mid - sum((b[1] + b[3]) / 2 for b in rows[-1]) / len(rows[-1])) < 0.5 * (box[3] - box[1]):
            rows[-1].append(box)
        else:
            rows.append([box])
    return [" ".join(b[4] for b in sorted(row, key=lambda b: b[0])) for row in rows]


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance between the two texts over the reference's length, after normalising what a page's
    typography does not decide: curly vs straight quotes, the space old books set before ; : ? !, and line
    breaks. Used to measure OCR against a transcription."""
    ref, hyp = _cer_normal(reference), _cer_normal(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(1, len(ref))


def _cer_normal(text: str) -> str:
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    text = text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'}))
    text = re.sub(r"\s+([;:?!,.])", r"\1", text)
    return " ".join(text.split())
