"""Documents -> chunks measured in the embedding model's own tokens, with separators that know Chinese
punctuation, so that no chunk is ever silently truncated by the embedder; Markdown tables are cut only between
rows, each piece of a long table under its header."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from langchain_core.documents import Document

# Tables of contents are full of dot leaders (". . . . . . 12"): they carry no meaning, cost tokens and make
# every contents page look like every question to the embedder.
_DOT_LEADERS = re.compile(r"(?:\s?\.){4,}")

# A Markdown table (as the loaders write them): a header row, a rule row, then rows, each line "| ... |".
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TABLE = re.compile(r"^\|[^\n]*\|[ \t]*\n\|(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*(?:\n\|[^\n]*\|[ \t]*)*$", re.MULTILINE)

# Paragraphs, then lines, then sentence ends (Latin and full-width), then clause marks, then words, then
# characters: the first separator that yields small-enough pieces wins.
SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    ". ",
    "! ",
    "? ",
    "；",
    "; ",
    "，",
    ", ",
    "、",
    " ",
    "",
]


def token_counter(model_dir: Path) -> Callable[[str], int]:
    """Count word pieces the way the embedding model does, without loading torch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count


class Splitter:
    """Split documents into chunks of at most `chunk_size` tokens; each chunk keeps its document's metadata
    plus `chunk` (its index within the source file)."""

    def __init__(self, count_tokens: Callable[[str], int], chunk_size: int, chunk_overlap: int) -> None:
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        if chunk_overlap >= chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        self.count_tokens = count_tokens
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._splitter = RecursiveCharacterTextSplitter(
            separators=SEPARATORS,
            keep_separator="end",
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=count_tokens,
            strip_whitespace=True,
        )

    def split(self, documents: Iterable[Document]) -> list[Document]:
        chunks: list[Document] = []
        for doc in documents:
            for piece in self._splitter.split_text(self._tables_in_pieces(clean(doc.page_content))):
                if not piece.strip():
                    continue
                chunks.append(Document(page_content=piece, metadata={**doc.metadata, "chunk": len(chunks)}))
        return chunks

    def _tables_in_pieces(self, text: str) -> str:
        """The text with each Markdown table set apart as a paragraph, and a table longer than a chunk cut into
        pieces of whole rows under its header, one paragraph each: the splitter's first separator is the
        paragraph, so it keeps each whole (a row alone longer than a chunk is the one thing still cut)."""
        pieces = _TABLE.sub(lambda m: "\n\n" + "\n\n".join(self._table_pieces(m.group(0).strip())) + "\n\n", text)
        return _BLANK_LINES.sub("\n\n", pieces) if pieces != text else text

    def _table_pieces(self, table: str) -> list[str]:
        if self.count_tokens(table) <= self.chunk_size:
            return [table]
        lines = table.split("\n")
        header, rows = "\n".join(lines[:2]), lines[2:]
        head = self.count_tokens(header) + 1
        if head > self.chunk_size // 2:  # repeating so large a header would leave too little room for rows
            header, rows, head = "", lines, 0
        budget = self.chunk_size - head
        groups: list[list[str]] = [[]]
        used = 0
        for row in rows:
            for part in self._row_parts(row, budget):
                size = self.count_tokens(part) + 1  # + the line break
                if groups[-1] and used + size > budget:
                    groups.append([])
                    used = 0
                groups[-1].append(part)
                used += size
        return ["\n".join(([header] if header else []) + group) for group in groups if group]

    def _row_parts(self, row: str, budget: int) -> list[str]:
        """A row, or the parts of one too long to fit a chunk under the header even alone."""
        if self.count_tokens(row) + 1 <= budget:
            return [row]
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        cutter = RecursiveCharacterTextSplitter(separators=SEPARATORS[2:], keep_separator="end", chunk_size=budget - 1,
                                                chunk_overlap=0, length_function=self.count_tokens)
        return cutter.split_text(row)


def clean(text: str) -> str:
    """Collapse dot leaders to one ellipsis."""
    return _DOT_LEADERS.sub(" …", text)
