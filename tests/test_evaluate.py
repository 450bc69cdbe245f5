"""rag.eval and `rag eval`: the metric wrapper on hand-computed cases, the file readers, answer
normalisation, the answer scoring on fixed answers, and both commands end to end on tiny generated sets (real
store, real embedding model, the small packaged chat model)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from rag.api import RAG
from rag.config import ConfigError
from rag.cli.eval import eval_group
from rag.eval import (
    RETRIEVAL_METRICS,
    QAItem,
    contains_answer,
    exact_match,
    token_f1,
    detect_format,
    doc_filename,
    evaluate_qa,
    evaluate_retrieval,
    ingest_contexts,
    load_beir,
    load_qa,
    load_retrieval_set,
    normalize_answer,
    percentile,
    roll_up,
    score_run,
    write_documents,
)
from tests.conftest import make_settings, rag_with


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# --- metrics ---------------------------------------------------------------------------------------------


def test_score_run_matches_hand_computed_values():
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}, "q3": {"d9": 1}}
    run = {
        "q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0},  # relevant at ranks 1 and 3
        "q2": {"d1": 2.0, "d2": 1.0},  # relevant at rank 2
        "q3": {},  # found nothing
        "q-unjudged": {"d1": 1.0},  # ignored: no judgement
    }
    means, per_query = score_run(qrels, run)
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg_q2 = 1 / math.log2(3)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1)
    assert per_query["q2"]["ndcg@10"] == pytest.approx(ndcg_q2)
    assert per_query["q3"] == {name: 0.0 for name in RETRIEVAL_METRICS}
    assert means["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert means["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert means["hit@1"] == pytest.approx(1 / 3)
    assert means["recall@10"] == means["recall@100"] == pytest.approx(2 / 3)
    assert set(per_query) == {"q1", "q2", "q3"}


def test_score_run_cutoffs_and_grades():
    # 12 documents, the relevant one 11th: outside @10, inside @100.
    run = {"q": {f"d{i}": float(100 - i) for i in range(1, 13)}}
    means, _ = score_run({"q": {"d11": 1}}, run)
    assert means["ndcg@10"] == means["mrr@10"] == means["recall@10"] == 0.0
    assert means["recall@100"] == 1.0
    # Graded judgements, linear gains as trec_eval and BEIR use (not 2^grade - 1): grade 1 ranked above grade 2.
    means, _ = score_run({"q": {"a": 2, "b": 1}}, {"q": {"b": 2.0, "a": 1.0}})
    assert means["ndcg@10"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert score_run({"q": {"a": 1}}, {}) == ({n: 0.0 for n in RETRIEVAL_METRICS}, {"q": {n: 0.0 for n in RETRIEVAL_METRICS}})


def test_roll_up_keeps_each_document_at_its_best_chunk():
    id_of = {"/s/a.txt": "A", "/s/b.txt": "B", "/s/c.txt": "C"}
    chunks = [Document("x", metadata={"source": s}) for s in
              ["/s/b.txt", "/s/a.txt", "/s/b.txt", "/other/file.pdf", "/s/c.txt", "/s/a.txt"]]
    ranked = roll_up(chunks, id_of)
    assert list(ranked) == ["B", "A", "C"]
    assert ranked["B"] > ranked["A"] > ranked["C"] > 0
    assert list(roll_up(chunks, id_of, depth=2)) == ["B", "A"]


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([7.0], 90) == 7.0
    assert math.isnan(percentile([], 50))


# --- answer normalisation ---------------------------------------------------------------------------------


def test_normalize_answer_english():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("U.S.A.") == "usa"
    assert contains_answer("It was built by Gustave Eiffel [1].", ["gustave eiffel"])
    assert contains_answer("The answer is: an apple.", ["Apple"])
    assert not contains_answer("In 1990 it was sold.", ["199"])  # whole words only in English
    assert not contains_answer("No idea.", ["Paris", ""])


def test_normalize_answer_chinese():
    # Full-width punctuation and spaces go; full-width letters and digits fold to ASCII.
    assert normalize_answer("《战国无双３》，由 光荣 和 ω－ｆｏｒｃｅ 开发。") == "战国无双3由光荣和ωforce开发"
    assert normalize_answer("“北京”、上海！") == "北京上海"
    assert contains_answer("该游戏由光荣和 ω-force 合作开发[1]。", ["光荣和ω-force"])
    assert contains_answer("约为4.9元", ["4.9"])
    assert contains_answer("他 在 2008 年 首次 出场", ["2008年"])
    assert not contains_answer("由任天堂开发。", ["光荣"])


def test_exact_match_and_f1_as_squad_scores_them():
    # Normalised as SQuAD does: case, punctuation and articles go; citation marks go too.
    assert exact_match("The Whiteness [2].", ["whiteness"]) == 1.0
    assert exact_match("It is white.", ["whiteness", "white"]) == 0.0
    # "understating the uncertainty" vs "understates the uncertainty": tokens understating, uncertainty vs
    # understates, uncertainty: 1 in common, precision 1/2, recall 1/2 -> F1 0.5.
    assert token_f1("Understating the uncertainty [1]", ["understates the uncertainty"]) == 0.5
    # Best of the references: "NBC" gives precision 1/3 (nbc of nbc, in, 2010), recall 1 -> 0.5.
    assert token_f1("NBC in 2010", ["CBS", "NBC"]) == 0.5
    assert token_f1("No idea.", ["Paris"]) == 0.0
    # Chinese is scored character by character: 光 荣 of 光 荣 和 ω force -> precision 1, recall 2/4 -> 2/3.
    assert round(token_f1("光荣[1]", ["光荣和ω-force"]), 4) == 0.6667
    assert exact_match("光荣和 ω-force。", ["光荣和ω-force"]) == 1.0
    # A citation mark is not an answer: "[1]" does not contain the reference "1".
    assert not contains_answer("See the table [1].", ["1"])


# --- readers ----------------------------------------------------------------------------------------------


def test_read_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "Who wrote R?", "answers": ["Ross Ihaka", "Robert Gentleman"]},
        {"question": "What is the moon made of?", "answers": []},
        {"id": "x", "question": "谁开发了它？", "answers": ["光荣"], "context": "光荣开发了它。", "title": "游戏"},
    ])
    items = load_qa(path)
    assert detect_format(path) == "jsonl"
    assert [i.question for i in items] == ["Who wrote R?", "What is the moon made of?", "谁开发了它？"]
    assert items[0].answers == ["Ross Ihaka", "Robert Gentleman"] and items[0].id == "1"
    assert items[1].answers == [] and items[1].context is None
    assert items[2].id == "x" and items[2].context == "光荣开发了它。" and items[2].context_id and items[2].title == "游戏"
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answers": []}\n{"question": 3}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        load_qa(tmp_path / "bad.jsonl")


def test_read_squad_v1_and_v2(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{
        "context": "Paris is the capital of France.",
        "qas": [
            {"id": "a", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0},
                                                                             {"text": "Paris", "answer_start": 0}]},
            {"id": "b", "question": "What is the capital of Mars?", "answers": [], "is_impossible": True,
             "plausible_answers": [{"text": "Paris", "answer_start": 0}]},
        ]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    items = load_qa(path)
    assert detect_format(path) == "squad"
    assert [(i.id, i.answers) for i in items] == [("a", ["Paris"]), ("b", [])]
    assert items[0].context == "Paris is the capital of France." and items[0].title == "Paris"
    assert items[0].context_id == items[1].context_id


def test_read_cmrc(tmp_path, shared):
    data = [{"context_id": "DEV_0", "title": "战国无双3", "context_text": "《战国无双3》是由光荣和ω-force开发的。",
             "qas": [{"query_id": "DEV_0_QUERY_0", "query_text": "由谁开发？", "answers": ["光荣和ω-force", "光荣和ω-force"]},
                     {"query_id": "DEV_0_QUERY_1", "query_text": "多少钱？", "answers": ["4.9", 4.9, 147.0]}]}]
    path = tmp_path / "cmrc.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    items = load_qa(path)
    assert detect_format(path) == "cmrc"
    assert items[0].answers == ["光荣和ω-force"] and items[0].context_id == "DEV_0" and items[0].title == "战国无双3"
    assert items[1].answers == ["4.9", "147"]  # numbers stored as floats read as the text they stand for
    rset = load_retrieval_set(path)
    assert rset.corpus == {"DEV_0": ("战国无双3", "《战国无双3》是由光荣和ω-force开发的。")}
    assert rset.qrels == {"DEV_0_QUERY_0": {"DEV_0": 1}, "DEV_0_QUERY_1": {"DEV_0": 1}}
    # The team's dev file has the same layout.
    real = load_retrieval_set(shared / "dev" / "cmrc2018" / "cmrc2018_dev_part1.json")
    assert len(real.corpus) == 424 and len(real.queries) == 1493
    assert all(len(rel) == 1 and next(iter(rel)) in real.corpus for rel in real.qrels.values())


def test_unknown_formats_are_config_errors(tmp_path):
    (tmp_path / "x.json").write_text('{"foo": 1}')
    (tmp_path / "empty").mkdir()
    for bad in [tmp_path / "x.json", tmp_path / "missing.json", tmp_path / "empty"]:
        with pytest.raises(ConfigError):
            load_retrieval_set(bad)


def make_beir(folder: Path, splits: tuple[str, ...] = ("test",)) -> Path:
    docs = [
        ("d1", "Honey bees", "Honey bees communicate the direction of flowers to their hive mates with a waggle dance."),
        ("d2", "Volcanoes", "Magma rising through the crust erupts as lava; basalt forms when lava cools quickly."),
        ("d3", "Sourdough", "The purple teapot of Hilda Brandvold sang a lullaby every Tuesday at noon."),
        ("d4", "Tides", "The gravitational pull of the Moon raises two bulges of ocean water, causing tides."),
        ("d5", "Vaccines", "Vaccines train the immune system to recognise a pathogen without causing the disease."),
        ("d6", "Herd immunity", "When most people are vaccinated, a contagious disease cannot spread and the few who "
                               "cannot be vaccinated are protected."),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, t, x in docs])
    write_jsonl(folder / "queries.jsonl", [
        {"_id": "q1", "text": "The purple teapot of Hilda Brandvold sang a lullaby every Tuesday at noon."},
        {"_id": "q2", "text": "How do bees tell other bees where flowers are?"},
        {"_id": "q3", "text": "How do vaccines protect people from disease?"},
        {"_id": "q-unjudged", "text": "What causes tides?"},
    ])
    (folder / "qrels").mkdir(exist_ok=True)
    for split in splits:
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td1\t1\nq3\td5\t2\nq3\td6\t1\nq3\td2\t0\n")
    return folder


def test_load_beir_and_splits(tmp_path):
    folder = make_beir(tmp_path / "beir")
    rset = load_beir(folder)
    assert list(rset.queries) == ["q1", "q2", "q3"]  # only judged queries, file order
    assert rset.qrels["q3"] == {"d5": 2, "d6": 1}  # grade 0 dropped
    assert rset.corpus["d1"][0] == "Honey bees"
    assert list(rset.limited(2).queries) == ["q1", "q2"]
    two = make_beir(tmp_path / "two", ("train", "dev"))
    with pytest.raises(ConfigError, match="--split"):
        load_beir(two)
    assert load_beir(two, "dev").name == "two (dev)"
    with pytest.raises(ConfigError, match="no split 'test'"):
        load_beir(two, "test")


def test_write_documents_is_incremental(tmp_path):
    folder = tmp_path / "docs"
    ids = write_documents({"a/b": ("T", "text"), ".hidden": ("", "x"), "empty": ("", "")}, folder)
    assert sorted(ids.values()) == [".hidden", "a/b"]
    assert all(not Path(p).name.startswith(".") for p in ids)
    path = next(p for p, i in ids.items() if i == "a/b")
    assert Path(path).read_text() == "T\n\ntext"
    mtime = os.stat(path).st_mtime_ns
    ids2 = write_documents({"a/b": ("T", "text")}, folder)
    assert os.stat(path).st_mtime_ns == mtime and list(ids2) == [path]
    assert sorted(p.name for p in folder.iterdir()) == [doc_filename("a/b")]  # the stale file went


# --- end to end -------------------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch, tmp_path, embeddings):
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # Every RAG the commands build shares the session's loaded embedding model (the real one).
    monkeypatch.setattr(RAG, "embeddings", property(lambda self: embeddings))
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(eval_group, [str(a) for a in args], prog_name="rag eval")


def test_eval_retrieval_command(runner, tmp_path):
    folder = make_beir(tmp_path / "beir")
    store = tmp_path / "store"
    result = invoke(runner, "retrieval", folder, "--store", store, "--json", "--per-query", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "hit@1"} <= report["metrics"].keys()
    assert all(0 <= v <= 1 for v in report["metrics"].values())
    assert report["queries"] == 3 and report["documents"] == 6 and report["mode"] == "hybrid"
    assert report["per_query"]["q1"]["mrr@10"] == 1.0  # the document's own unique sentence: rank 1
    assert report["per_query"]["q2"]["mrr@10"] == 1.0
    assert report["metrics"]["recall@100"] == 1.0  # six documents, all ranked
    assert report["metrics"]["mrr@10"] >= 0.5

    # Reusing the store: nothing is ingested again, the figures repeat; other modes on the same store.
    again = json.loads(invoke(runner, "retrieval", folder, "--store", store, "--json", "-q").stdout)
    assert again["metrics"] == report["metrics"]
    for mode in ("bm25", "dense"):
        result = invoke(runner, "retrieval", folder, "--store", store, "--retrieval", mode, "--json", "--per-query",
                        "--limit-queries", "1", "-q")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["mode"] == mode and out["queries"] == 1 and out["per_query"]["q1"]["mrr@10"] == 1.0

    # The human-readable table.
    result = invoke(runner, "retrieval", folder, "--store", store)
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.stdout and "3 queries, 6 documents" in result.stdout


def test_eval_retrieval_user_errors(runner, tmp_path):
    result = invoke(runner, "retrieval", tmp_path / "nope")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr
    (tmp_path / "x.json").write_text("[1, 2]")
    result = invoke(runner, "retrieval", tmp_path / "x.json")
    assert result.exit_code == 2 and "unknown format" in result.stderr
    result = invoke(runner, "retrieval", make_beir(tmp_path / "b", ("train", "dev")))
    assert result.exit_code == 2 and "--split" in result.stderr


def test_evaluation_refuses_a_store_with_other_files(tmp_path, embeddings):
    rag = rag_with(tmp_path / "store", embeddings)
    (tmp_path / "mine.txt").write_text("My own notes about the purple teapot.")
    rag.ingest(tmp_path / "mine.txt")
    with pytest.raises(ConfigError, match="other file"):
        evaluate_retrieval(rag, load_beir(make_beir(tmp_path / "beir")))


def test_evaluate_qa_scores_fixed_answers(tmp_path, embeddings):
    # A fake chat model (fixed replies, in order) over the real chain, store and embedder; min_score -1: every
    # retrieved passage counts as relevant, so every question reaches the model and takes the next reply.
    teapot = "Hilda Brandvold owns a purple teapot that sings a lullaby every Tuesday at noon."
    items = [
        QAItem("colour", "What colour is the teapot of Hilda Brandvold?", ["purple"], "c1", teapot),
        QAItem("day", "On which day does the teapot sing?", ["Tuesday"]),
        QAItem("owner", "Who owns the purple teapot?", ["Hilda Brandvold"]),
        QAItem("zorblax", "What is the population of the planet Zorblax?", []),
        QAItem("moon", "What is the moon made of?", []),
    ]
    replies = ["Her teapot is purple [1].", "The documents do not say.", "It belongs to Hilda [1].",
               "The documents do not say.", "The moon is made of green cheese [1]."]
    # min_support 0: the support check (tests/test_chain.py) would turn the paraphrase "It belongs to Hilda" into
    # a refusal; here the scoring of given answers is under test.
    rag = RAG(make_settings(tmp_path / "store", min_score=-1.0, min_support=0.0), embeddings=embeddings,
              llm=FakeListChatModel(responses=replies))
    ingest_contexts(rag, items)
    report = evaluate_qa(rag, items, "fixed")
    assert [(r.id, r.refused, r.correct) for r in report.results] == [
        ("colour", False, True),  # "purple" in the answer
        ("day", True, False),  # refused, yet the question has an answer
        ("owner", False, False),  # "hilda" alone does not contain "hilda brandvold"
        ("zorblax", True, True),  # refused, and the question has no answer
        ("moon", False, False),  # answered a question that has none
    ]
    d = report.to_dict()
    assert (d["questions"], d["answerable"], d["unanswerable"]) == (5, 3, 2)
    # Right among the 3 answerable: colour only, 1/3; refused among them: day only, 1/3; refused among the 2
    # unanswerable: zorblax only, 1/2.
    assert (d["answer_contains_reference"], d["false_refusals"], d["correct_refusals"]) == (0.3333, 0.3333, 0.5)
    # SQuAD's scores over the 3 answerable, a refusal scoring 0: "her teapot is purple" vs "purple" F1 2/5;
    # "it belongs to hilda" vs "hilda brandvold" F1 2/6: mean (0.4 + 0 + 0.3333) / 3.
    assert (d["exact_match"], d["f1"]) == (0.0, 0.2444)
    # Every question reached the model (min_score -1), so every refusal is the model's; the teapot passage (the
    # only one in the store) holds each reference answer and was shown for each answerable question.
    assert [r.refused_by for r in report.results] == [None, "model", None, "model", None]
    assert [r.reference_shown for r in report.results] == [True, True, True, None, None]
    assert (d["reference_shown"], d["false_refusals_with_reference_shown"], d["refused_by_threshold"]) == (1.0, 0.3333, 0.0)
    assert [(p["source"], p["shown"], p["has_reference"]) for p in report.results[0].passages] == [("c1.txt", True, True)]
    assert all(r.prompt_tokens > 40 for r in report.results)


def test_eval_qa_command(runner, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "What colour is the teapot of Hilda Brandvold?", "answers": ["purple"],
         "context": "Hilda Brandvold owns a purple teapot that sings a lullaby every Tuesday at noon."},
        {"question": "On which day does the teapot sing?", "answers": ["Tuesday", "Tuesdays"],
         "context": "The teapot sings only on Tuesdays."},
        {"question": "What is the population of the planet Zorblax?", "answers": []},
    ])
    store = tmp_path / "store"
    result = invoke(runner, "qa", path, "--store", store, "--ingest-contexts", "--model", "smollm2-135m",
                    "--max-tokens", "32", "--json", "--per-question", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["questions"] == 3 and report["answerable"] == 2 and report["unanswerable"] == 1
    assert report["model"] == "smollm2-135m"
    for key in ("answer_contains_reference", "false_refusals", "correct_refusals"):
        assert 0 <= report[key] <= 1
    lat = report["latency_seconds"]
    assert set(lat) == {"retrieval", "first_token", "total"}
    for part in lat.values():
        assert 0 < part["p50"] <= part["p90"]
    assert lat["retrieval"]["p50"] <= lat["first_token"]["p50"] <= lat["total"]["p50"]
    rows = report["per_question"]
    assert [r["answers"] for r in rows][2] == [] and all(r["answer"] for r in rows)
    for r in rows:
        assert 0 < r["retrieval"] <= r["first_token"] <= r["total"]
    # Zorblax matches no passage above min_score 0.3 (cosine 0.03 and -0.02), so the chain refuses without asking
    # the model: a right answer, and 1 correct refusal of 1 unanswerable question = 1.0. How answers are scored
    # is checked on fixed answers above; what the 135M model answers is not pinned here.
    assert (rows[2]["refused"], rows[2]["correct"]) == (True, True)
    assert report["correct_refusals"] == 1.0

    # --limit and the text report, on the store built above.
    result = invoke(runner, "qa", path, "--store", store, "--model", "smollm2-135m", "--max-tokens", "16",
                    "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "1 questions (1 answerable" in result.stdout and "p50" in result.stdout


def test_eval_qa_user_errors(runner, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answers": []}])
    result = invoke(runner, "qa", path, "--store", tmp_path / "store", "--ingest-contexts")
    assert result.exit_code == 2 and "nothing to ingest" in result.stderr
    result = invoke(runner, "qa", path, "--store", tmp_path / "store", "--model", "smollm2-135m")
    assert result.exit_code == 2 and "store is empty" in result.stderr
    result = invoke(runner, "qa", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "no such file" in result.stderr
