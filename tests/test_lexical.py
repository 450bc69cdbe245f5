import shutil

from rag.storage.lexical import LexicalIndex, tokenize
from tests.conftest import DATA, rag_with


def test_tokenize_mixed_languages():
    tokens = tokenize("如何安装 Rust 编译器？The Rust compiler is installed by rustup.")
    assert "安装" in tokens and "编译器" in tokens
    assert "rust" in tokens and "rustup" in tokens and "compil" in tokens  # English words are stemmed (Snowball)
    assert "the" not in tokens and "如何" not in tokens  # stop words carry no signal


def test_tokenize_stems_and_cuts_chinese_after_latin():
    assert tokenize("compilers installed") == tokenize("compiler installs") == tokenize("compiling installation")
    # Chinese right after digits or Latin letters still goes to jieba (it used to stay one opaque token)
    assert {"世界杯", "冠军"} <= set(tokenize("2018年世界杯的冠军")) and "2018" in tokenize("2018年世界杯的冠军")
    assert "编译器" in tokenize("Rust的编译器")


def test_index_from_another_tokenizer_is_rebuilt(tmp_path):
    import json

    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a"], ["pelicans fly"], revision="r1")
    meta = tmp_path / "bm25" / "ids.json"
    data = json.loads(meta.read_text())
    assert LexicalIndex(tmp_path / "bm25").load()
    meta.write_text(json.dumps({**data, "tokenizer": "1"}))  # as an older version saved it
    stale = LexicalIndex(tmp_path / "bm25")
    assert not stale.load() and stale.revision is None  # so the store rebuilds it before searching


def test_index_saves_loads_and_filters(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a", "b", "c"], ["pelicans fly over the sea", "the sea is salty", "鹈鹕在海上飞翔"], revision="r1")
    again = LexicalIndex(tmp_path / "bm25")
    assert again.load() and again.revision == "r1"
    assert [cid for cid, _ in again.search("pelicans", k=3)] == ["a"]
    assert [cid for cid, _ in again.search("sea", k=3, allowed={"b"})] == ["b"]
    assert [cid for cid, _ in again.search("鹈鹕", k=3)] == ["c"]
    assert again.search("nothing matches this", k=3) == []


def test_index_follows_the_store(tmp_path, embeddings):
    folder = tmp_path / "docs"
    shutil.copytree(DATA, folder)
    rag = rag_with(tmp_path / "store", embeddings)
    rag.ingest(folder)
    hits = rag.store.lexical().search("rustup 安装", k=5)
    zh = str(folder / "zh" / "rust-installation.zh.md")
    zh_ids = set(rag.store.manifest.get(zh).chunk_ids)
    assert hits and hits[0][0] in zh_ids
    rag.delete(zh)
    hits = rag.store.lexical().search("rustup 安装", k=5)
    assert not zh_ids & {cid for cid, _ in hits}  # deleted chunks are gone from the lexical side too
    assert (tmp_path / "store" / "bm25" / "ids.json").is_file()
