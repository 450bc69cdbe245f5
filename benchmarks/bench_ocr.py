"""OCR quality and speed on the shared scanned samples: character error rate (CER) on the Huck Finn page
against a transcription (tests/references/), word recall (and word-pair recall, which drops when columns
are interleaved) on linn-scan.pdf against linn.txt, and seconds per page.

    python benchmarks/bench_ocr.py [SHARED_CORPUS]

Prints figures; never asserts on time.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

from rag import privacy

privacy.apply()  # the privacy switches before onnxruntime is imported
from rag.loaders import ocr
from rag.loaders import load_file

REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "references"
CORPUS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "corpus"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(reference: list, found: list) -> float:
    ref, got = Counter(reference), Counter(found)
    return sum(min(c, got[w]) for w, c in ref.items()) / max(1, sum(ref.values()))


def main() -> None:
    if not ocr.available():
        sys.exit("the ocr extra is not installed: pip install 'rag[ocr]'")
    if not CORPUS.is_dir():
        sys.exit(f"{CORPUS}: shared corpus not found")
    ocr._engine()  # load the models outside the timings
    rows = []
    for rel in ["docs/scanned/huckfinn-c03-29-scan.pdf", "bad_inputs/pdf_no_text/linn-scan.pdf",
                "bad_inputs/pdf_huge/hugemono-35000px.pdf", "bad_inputs/pdf_huge/enormous-page.pdf"]:
        path = CORPUS / rel
        start = time.perf_counter()
        loaded = load_file(path)
        seconds = time.perf_counter() - start
        text = "\n".join(d.page_content for d in loaded.documents)
        row = {"file": path.name, "pages": loaded.pages, "s/page": seconds / max(1, loaded.pages), "chars": len(text)}
        transcription = REFERENCES / f"{path.stem.removesuffix('-scan')}.txt"
        if transcription.is_file():
            row["CER"] = ocr.character_error_rate(transcription.read_text(encoding="utf-8"), text)
        ref = path.with_name("linn.txt")
        if path.name == "linn-scan.pdf" and ref.is_file():
            ref_words, got = words(ref.read_text()), words(text)
            row["word recall"] = recall(ref_words, got)
            row["word-pair recall"] = recall(list(zip(ref_words, ref_words[1:])), list(zip(got, got[1:])))
        row["note"] = "; ".join(w.split(": ", 1)[-1] for w in loaded.warnings)[:90]
        rows.append(row)
    print("| file | pages | s/page | chars | CER | word recall | word-pair recall | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        wr = f"{r['word recall']:.3f}" if "word recall" in r else "-"
        pr = f"{r['word-pair recall']:.3f}" if "word-pair recall" in r else "-"
        cer = f"{r['CER']:.2%}" if "CER" in r else "-"
        print(f"| {r['file']} | {r['pages']} | {r['s/page']:.1f} | {r['chars']} | {cer} | {wr} | {pr} | {r['note']} |")


if __name__ == "__main__":
    main()
