import json
import shutil
import sys

import pytest

from rag.storage import lexical
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
    meta = tmp_path / "bm25" / "index.json"
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
    assert (tmp_path / "store" / "bm25" / "index.json").is_file()


def test_tokenizer_name_names_version_stemmer_and_bm25_parameters():
    assert lexical.tokenizer_name() == "2+snowball-english+bm25-0.9-0.4"


@pytest.mark.parametrize(
    "word, stem",
    [("queries", "query"), ("ties", "ty"), ("caries", "cary"), ("seies", "seie"), ("daies", "daie"),
     ("horses", "horse"), ("heroes", "heroe"), ("cats", "cat"), ("yes", "ye"), ("ies", "ie"), ("aes", "ae"),
     ("es", "es"), ("is", "is"), ("bus", "bus"), ("glass", "glass"), ("sea", "sea")],
)
def test_s_stemmer_strips_plurals_only(word, stem):
    assert lexical._s_stem(word) == stem


def test_without_pystemmer_the_s_stemmer_is_used_and_snowball_indexes_are_rebuilt(tmp_path, monkeypatch):
    LexicalIndex(tmp_path / "bm25").build(["a"], ["pelicans fly"], revision="r1")  # with Snowball
    monkeypatch.setitem(sys.modules, "Stemmer", None)  # `import Stemmer` now raises ImportError
    lexical._stemmer.cache_clear()
    try:
        assert lexical.tokenizer_name() == "2+s-stemmer+bm25-0.9-0.4"
        assert tokenize("queries about flying horses") == ["query", "flying", "horse"]
        assert not LexicalIndex(tmp_path / "bm25").load()
    finally:
        monkeypatch.undo()
        lexical._stemmer.cache_clear()
    assert lexical.tokenizer_name() == "2+snowball-english+bm25-0.9-0.4"


def test_an_index_never_built_finds_nothing(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    assert idx.load() is False and idx.revision is None
    assert idx.search("pelicans", k=3) == []
    # no store: every question word is unknown, and a chunk holding it covers the whole question
    assert idx.coverage("pelicans", {"a": "pelicans fly", "b": "gulls fly"}) == {"a": 1.0, "b": 0.0}


def test_an_empty_store_saves_an_empty_index(tmp_path):
    LexicalIndex(tmp_path / "bm25").build([], [], revision="r0")
    idx = LexicalIndex(tmp_path / "bm25")
    assert idx.load() is True and idx.revision == "r0"
    assert idx.search("pelicans", k=3) == []


def test_an_unreadable_index_is_not_loaded(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a"], ["pelicans fly"], revision="r1")
    (tmp_path / "bm25" / "index.json").write_text("{not json")
    assert idx.load() is False
    assert (idx.revision, idx.search("pelicans", k=3)) == (None, [])


def test_rebuild_replaces_the_index_and_leaves_no_temporary_folders(tmp_path):
    folder = tmp_path / "store" / "deep" / "bm25"  # parents created as needed
    LexicalIndex(folder).build(["a"], ["pelicans fly"], revision="r1")
    LexicalIndex(folder).build(["b"], ["gulls fly"], revision="r2")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["bm25"]
    idx = LexicalIndex(folder)
    assert idx.load() and idx.revision == "r2"
    assert [cid for cid, _ in idx.search("gulls", k=3)] == ["b"] and idx.search("pelicans", k=3) == []


def test_a_failed_build_keeps_the_old_index(tmp_path):
    LexicalIndex(tmp_path / "bm25").build(["a"], ["pelicans fly"], revision="r1")
    with pytest.raises(AttributeError):
        LexicalIndex(tmp_path / "bm25").build(["b"], [None], revision="r2")  # a text that cannot be tokenised
    with pytest.raises(ValueError, match="differ in length"):
        LexicalIndex(tmp_path / "bm25").build(["b", "c"], ["gulls fly"], revision="r2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]
    idx = LexicalIndex(tmp_path / "bm25")
    assert idx.load() and idx.revision == "r1"
    assert json.loads((tmp_path / "bm25" / "index.json").read_text())["revision"] == "r1"
    assert [cid for cid, _ in idx.search("pelicans", k=3)] == ["a"]


def test_an_index_of_the_older_format_is_not_loaded(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a"], ["pelicans fly"], revision="r1")
    meta = tmp_path / "bm25" / "index.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 2}))
    assert not LexicalIndex(tmp_path / "bm25").load()


def test_bm25_scores_use_k1_0_9_and_b_0_4(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a", "b", "c"], ["pelican pelican pelican sea", "pelican sea sea sea sea sea sea sea sea gull gull gull",
                                "gull"], revision="r1")
    # bm25s' own defaults (k1 1.5, b 0.75) give a 0.3261 / 0.3809 and b 0.6424 / 0.6924 here
    assert idx.search("pelican", k=3) == [("a", pytest.approx(0.3716, abs=1e-4)), ("b", pytest.approx(0.2041, abs=1e-4))]
    assert [(cid, round(s, 4)) for cid, s in idx.search("sea gull", k=3)] == [("b", 0.7319), ("c", 0.2931), ("a", 0.262)]
    assert idx.search("the of", k=3) == []  # stop words only: nothing to search for


def test_build_and_search_print_no_progress_bars(tmp_path, capfd):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a", "b"], ["pelicans fly", "gulls fly"], revision="r1")
    idx.search("pelicans", k=2)
    idx.search("fly", k=2, allowed={"b"})
    assert capfd.readouterr() == ("", "")


def test_coverage_weighs_question_words_by_idf(tmp_path):
    texts = {"a": "pelicans fly over the sea", "b": "the sea is salty", "c": "gulls fly"}
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(list(texts), list(texts.values()), revision="r1")
    # idf(pelican) = ln(1 + 2.5/1.5) = 0.9808 (one chunk of 3), idf(sea) = ln(1 + 1.5/2.5) = 0.4700 (two)
    cov = idx.coverage("pelicans sea", texts)
    assert cov == {"a": 1.0, "b": pytest.approx(0.32395, abs=1e-5), "c": 0.0}
    # a word the store never mentions: idf ln(1 + 3.5/0.5) = 2.0794 outweighs the rest
    assert idx.coverage("albatross sea", texts) == {"a": pytest.approx(0.18436, abs=1e-5),
                                                     "b": pytest.approx(0.18436, abs=1e-5), "c": 0.0}
    assert idx.coverage("the of", texts) == {"a": 0.0, "b": 0.0, "c": 0.0}
    # share: the same weights for one text, nothing cached (a text seen once, like an answer's passages)
    assert idx.share("pelicans sea", "the sea is salty") == pytest.approx(0.32395, abs=1e-5)
    assert idx.share("pelicans sea", "pelicans and the sea") == 1.0
    assert (idx.share("the of", "the sea"), idx.share("albatross", "gulls fly")) == (0.0, 0.0)
    # a Chinese compound is judged by its parts: 苹果 (in the text) and 公司 (the question's)
    assert tokenize("苹果公司") == ["苹果", "公司", "苹果公司"]
    assert idx.share("苹果公司", "苹果的公司") == 1.0
    assert idx.share("苹果公司", "为苹果的格式") == pytest.approx(0.5)


def test_tokenize_exact_words():
    # search mode: 世界 as well as 世界杯; the stop words 的, 什么, 是 dropped
    assert tokenize("2018年世界杯的冠军") == ["2018", "年", "世界", "世界杯", "冠军"]
    assert tokenize("什么是所有权") == ["所有", "有权", "所有权"]
    assert tokenize("What does rustup do?") == ["rustup"]
    assert tokenize("read_csv") == ["read", "csv"]  # underscores split identifiers
    # Snowball English, not the older Porter algorithm (gener, fairli, dy)
    assert tokenize("generously fairly dying") == ["generous", "fair", "die"]
