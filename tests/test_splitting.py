import pytest
from langchain_core.documents import Document

from rag.models import packaged as models
from rag.splitting import Splitter, clean, token_counter
from tests.conftest import DATA

COUNT = token_counter(models.embedding_model_path("all-MiniLM-L6-v2"))


def test_no_chunk_longer_than_the_limit_on_real_text():
    from rag.loaders import load_file

    docs = load_file(DATA / "R-FAQ.pdf").documents + load_file(DATA / "zh" / "rust-installation.zh.md").documents
    chunks = Splitter(COUNT, chunk_size=120, chunk_overlap=20).split(docs)
    assert len(chunks) > 50
    lengths = [COUNT(c.page_content) for c in chunks]
    assert max(lengths) <= 120
    assert sum(lengths) / len(lengths) > 60  # chunks are filled, not shredded


def test_metadata_kept_and_chunks_numbered_per_file():
    docs = [Document("alpha beta. " * 300, metadata={"source": "a.txt", "page": 3})]
    chunks = Splitter(COUNT, chunk_size=50, chunk_overlap=0).split(docs)
    assert [c.metadata["chunk"] for c in chunks] == list(range(len(chunks)))
    assert all(c.metadata["source"] == "a.txt" and c.metadata["page"] == 3 for c in chunks)


def test_chinese_splits_at_full_width_punctuation():
    sentence = "所有权是 Rust 最为与众不同的特性，它让 Rust 无需垃圾回收即可保障内存安全。"
    docs = [Document(sentence * 40, metadata={"source": "zh.md"})]
    chunks = Splitter(COUNT, chunk_size=100, chunk_overlap=0).split(docs)
    assert len(chunks) > 2
    assert all(COUNT(c.page_content) <= 100 for c in chunks)
    # every chunk but possibly the last ends at a sentence end or clause mark, never mid-word
    assert all(c.page_content.endswith(("。", "，")) for c in chunks[:-1])


def test_a_long_unbroken_string_is_still_cut_to_size():
    docs = [Document("x" * 5000 + "中" * 3000, metadata={"source": "blob.txt"})]
    chunks = Splitter(COUNT, chunk_size=64, chunk_overlap=8).split(docs)
    assert all(COUNT(c.page_content) <= 64 for c in chunks)


def test_dot_leaders_are_collapsed():
    docs = [Document("2.1 What is R? . . . . . . . . . . . . . . 3\n2.2 What is S?....... 12", metadata={"source": "toc.pdf"})]
    (chunk,) = Splitter(COUNT, chunk_size=100, chunk_overlap=0).split(docs)
    assert chunk.page_content == "2.1 What is R? … 3\n2.2 What is S? … 12"


def test_token_counter_counts_word_pieces_without_truncating():
    count = token_counter(models.embedding_model_path("all-MiniLM-L6-v2"))
    assert count("Hello world") == 2
    assert count("所有权是 Rust 最为与众不同的特性") == 14
    # tokenizer.json truncates at 128 tokens; the counter must see the whole text to keep chunks within the limit
    assert count("pelican " * 300) == 900


def test_overlap_must_be_smaller_than_the_chunk():
    with pytest.raises(ValueError, match="^chunk_overlap must be smaller than chunk_size$"):
        Splitter(COUNT, chunk_size=50, chunk_overlap=50)
    splitter = Splitter(COUNT, chunk_size=50, chunk_overlap=49)
    # the ingest's reader process rebuilds the splitter from these
    assert (splitter.chunk_size, splitter.chunk_overlap, splitter.count_tokens) == (50, 49, COUNT)


def test_chunks_are_stripped_of_surrounding_whitespace():
    docs = [Document("  First paragraph here, with more words.\n\n  Second paragraph here.  ", metadata={"source": "p.txt"})]
    chunks = Splitter(COUNT, chunk_size=10, chunk_overlap=0).split(docs)
    assert [c.page_content for c in chunks] == ["First paragraph here, with more words.", "Second paragraph here."]


def test_only_dot_leaders_are_collapsed_not_ellipses():
    assert clean("Wait... what? Also . . . . 7 and ....8 but ... stays") == "Wait... what? Also … 7 and …8 but ... stays"


@pytest.mark.parametrize(
    "unit",
    [
        "pelican\nthe second line of the paragraph is longer\n\n",  # paragraphs before lines
        "pelican line without a full stop\n",
        "鹈鹕在海上飞翔了很久很久。",
        "鹈鹕在海上飞翔了很久很久！",
        "鹈鹕在海上飞翔了很久很久？",
        "鹈鹕在海上飞翔了很久很久；",
        "鹈鹕在海上飞翔了很久很久，",
        "鹈鹕在海上飞翔了很久很久、",
        "pelicans fly 2.5 km over the sea. ",  # a sentence end, not the decimal point
        "pelicans fly 2.5 km over the sea! ",
        "pelicans fly 2.5 km over the sea? ",
        "pelicans fly 2.5 km over the sea; ",
        "pelicans fly 2.5 km over the sea, ",
        "pelicans fly far ",
    ],
)
def test_each_separator_cuts_between_its_units(unit):
    # a text of one repeated unit that holds only that separator: every chunk is whole units
    mark = "鹈鹕" if "鹈鹕" in unit else "pelican"
    chunks = Splitter(COUNT, chunk_size=5 * COUNT(unit) // 2, chunk_overlap=0).split([Document(unit * 12, metadata={})])
    assert len(chunks) >= 5
    assert [c.page_content for c in chunks] == [(unit * c.page_content.count(mark)).strip() for c in chunks]
