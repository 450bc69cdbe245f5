"""Documents -> chunks measured in the embedding model's own tokens, with separators that know Chinese
punctuation, so that no chunk is ever silently truncated by the embedder."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from langchain_core.documents import Document

# Tables of contents are full of dot leaders (". . . . . . 12"): they carry no meaning, cost tokens and make
# every contents page look like every question to the embedder.
_DOT_LEADERS = re.compile(r"(?:\s?\.){4,}")

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
            for piece in self._splitter.split_text(clean(doc.page_content)):
                if not piece.strip():
                    continue
                chunks.append(Document(page_content=piece, metadata={**doc.metadata, "chunk": len(chunks)}))
        return chunks


def clean(text: str) -> str:
    """Collapse dot leaders to one ellipsis."""
    return _DOT_LEADERS.sub(" …", text)
