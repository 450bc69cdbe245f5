"""The BM25 index updated in place (new segments, tombstones, merges) scores exactly as a fresh build over the same
chunks, after add, replace, delete and prune sequences in English and Chinese, also when reopened by another
process; and a fresh build scores as bm25s itself does."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from rag.storage.lexical import BM25_B, BM25_K1, LexicalIndex, tokenize
from tests.conftest import DATA, REPO

QUERIES = ["pelicans", "sea gull", "encrypt a PDF with a password", "rustup 安装", "如何安装 Rust 编译器", "cargo build",
           "the of", "decrypt decrypt owner password", "环境变量 PATH"]


def paragraphs() -> list[tuple[str, str, str]]:
    """(group, chunk id, text): the real English and Chinese Markdown of data/, one chunk per paragraph."""
    chunks = []
    for path in (DATA / "pypdf-encryption-decryption.md", DATA / "zh" / "rust-installation.zh.md"):
        parts = [p.strip() for p in re.split(r"\n\s*\n", path.read_text()) if p.strip()]
        for half, start in (("a", 0), ("b", len(parts) // 2)):
            group = f"{path.stem}-{half}"
            chunks += [(group, f"{group}-{i:06d}", text) for i, text in enumerate(parts[start:start + len(parts) // 2])]
    chunks += [("birds", "birds-000000", "Pelicans fly over the sea."), ("birds", "birds-000001", "A gull, a sea, a gull."),
               ("empty", "empty-000000", "the of and")]  # a chunk with no words at all
    return chunks


def fresh(tmp_path, chunks, name="fresh") -> LexicalIndex:
    idx = LexicalIndex(tmp_path / name)
    idx.build([c for _, c, _ in chunks], [t for _, _, t in chunks], "r", [g for g, _, _ in chunks])
    return idx


def results(idx: LexicalIndex) -> dict[str, list[tuple[str, float]]]:
    return {q: idx.search(q, k=1000) for q in QUERIES}


def assert_same(got: LexicalIndex, want: LexicalIndex) -> None:
    a, b = results(got), results(want)
    for q in QUERIES:
        assert [cid for cid, _ in a[q]] == [cid for cid, _ in b[q]], q
        assert np.allclose([s for _, s in a[q]], [s for _, s in b[q]], rtol=0, atol=1e-6), q
    texts = {"pelicans": "Pelicans fly", "x": "安装 Rust"}
    assert got.coverage("pelicans 安装", texts) == pytest.approx(want.coverage("pelicans 安装", texts), abs=1e-9)
    assert len(got) == len(want)


def add(idx: LexicalIndex, chunks, group: str, revision: str) -> None:
    mine = [c for c in chunks if c[0] == group]
    idx.update([group], [c for _, c, _ in mine], [t for _, _, t in mine], revision, [group] * len(mine))


def test_add_replace_delete_and_prune_score_as_a_fresh_build(tmp_path):
    chunks = paragraphs()
    groups = list(dict.fromkeys(g for g, _, _ in chunks))
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build([], [], "r0")
    for n, group in enumerate(groups):  # ingest file by file
        add(idx, chunks, group, f"r{n + 1}")
    assert_same(idx, fresh(tmp_path, chunks))
    assert idx.search("pelicans", k=3) == [("birds-000000", pytest.approx(2.3550, abs=1e-4))]  # bm25s gives the same

    # replace one file with other text (fewer chunks), delete another, prune a third
    changed = [(g, c, "Gulls and pelicans rest on the pier." if g == "birds" else t) for g, c, t in chunks
               if c != "birds-000001" and not g.startswith("rust-installation.zh-a") and g != "empty"]
    add(idx, changed, "birds", "r10")
    idx.update(["rust-installation.zh-a"], [], [], "r11")
    idx.update(["empty"], [], [], "r12")
    assert idx.revision == "r12"
    assert_same(idx, fresh(tmp_path, changed, "fresh2"))
    assert [cid for cid, _ in idx.search("gull pier", k=5)] == ["birds-000000"]

    # and back: the deleted files come again
    for n, group in enumerate(["rust-installation.zh-a", "empty", "birds"]):
        add(idx, chunks, group, f"r{20 + n}")
    assert_same(idx, fresh(tmp_path, chunks, "fresh3"))


def test_literal_scores_after_updates_are_those_of_bm25_with_k1_0_9_and_b_0_4(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["a", "x"], ["pelican pelican pelican sea", "albatross albatross"], "r1")
    idx.update(["x"], ["b", "c"], ["pelican sea sea sea sea sea sea sea sea gull gull gull", "gull"], "r2")
    # the same figures as test_lexical.py's fresh build of a, b, c
    assert idx.search("pelican", k=3) == [("a", pytest.approx(0.3716, abs=1e-4)), ("b", pytest.approx(0.2041, abs=1e-4))]
    assert [(cid, round(s, 4)) for cid, s in idx.search("sea gull", k=3)] == [("b", 0.7319), ("c", 0.2931), ("a", 0.262)]
    assert idx.search("albatross", k=3) == []


def test_a_fresh_build_scores_as_bm25s_does(tmp_path):
    import bm25s

    chunks = paragraphs()
    texts = [t for _, _, t in chunks]
    ref = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    ref.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
    idx = fresh(tmp_path, chunks)
    for q in QUERIES:
        tokens = tokenize(q)
        if not tokens:
            continue
        want = ref.get_scores(tokens)
        got = dict(idx.search(q, k=1000))
        assert {chunks[i][1]: pytest.approx(float(s), rel=1e-5) for i, s in enumerate(want) if s > 0} == got, q


def test_many_small_updates_keep_few_segments_and_the_same_scores(tmp_path):
    chunks = [(f"f{i // 3}", f"f{i // 3}-{i % 3:06d}", t) for i, (_, _, t) in enumerate(paragraphs() * 2)]
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build([], [], "r0")
    groups = list(dict.fromkeys(g for g, _, _ in chunks))
    for n, group in enumerate(groups):
        add(idx, chunks, group, f"r{n}")
    for group in groups[::4]:  # a quarter of the files deleted, one by one
        idx.update([group], [], [], "del")
    kept = [c for c in chunks if c[0] not in groups[::4]]
    assert_same(idx, fresh(tmp_path, kept))
    segments = json.loads((tmp_path / "bm25" / "index.json").read_text())["segments"]
    assert len(segments) <= 1 + int(np.log2(len(chunks)))
    # nothing on disk but what index.json names
    named = {s["name"] for s in segments} | {s["dead"] for s in segments if s["dead"]}
    assert {p.name for p in (tmp_path / "bm25").iterdir()} == named | {"index.json"}


REOPEN = """
import json, sys
from rag.storage.lexical import LexicalIndex
idx = LexicalIndex(sys.argv[1])
assert idx.load()
print(json.dumps({"revision": idx.revision, "hits": {q: idx.search(q, k=1000) for q in sys.argv[2:]}}))
"""


def test_another_process_reopens_the_updated_index_with_the_same_results(tmp_path):
    chunks = paragraphs()
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build([], [], "r0")
    for group in dict.fromkeys(g for g, _, _ in chunks):
        add(idx, chunks, group, "r1")
    idx.update(["birds"], [], [], "r2")
    out = subprocess.run([sys.executable, "-c", REOPEN, str(tmp_path / "bm25"), *QUERIES], capture_output=True,
                         text=True, cwd=REPO, check=True)
    got = json.loads(out.stdout)
    assert got["revision"] == "r2"
    assert got["hits"] == {q: [[cid, s] for cid, s in hits] for q, hits in results(idx).items()}
    assert got["hits"]["pelicans"] == []


def test_an_update_filters_and_keeps_ties_in_id_order(tmp_path):
    idx = LexicalIndex(tmp_path / "bm25")
    idx.build(["c", "a"], ["gulls fly", "gulls fly"], "r1")
    idx.update([], ["b"], ["gulls fly"], "r2")
    assert [cid for cid, _ in idx.search("gulls", k=3)] == ["a", "b", "c"]
    assert [cid for cid, _ in idx.search("gulls", k=2)] == ["a", "b"]
    assert [cid for cid, _ in idx.search("gulls", k=3, allowed={"c", "b"})] == ["b", "c"]
    assert idx.search("gulls", k=3, allowed=set()) == []


def test_update_needs_an_open_index(tmp_path):
    with pytest.raises(RuntimeError, match="loaded or built"):
        LexicalIndex(tmp_path / "bm25").update([], ["a"], ["gulls"], "r1")
