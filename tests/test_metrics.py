"""rag.eval.metrics: corners of the scoring that mutation testing found untested (fast, no models)."""

import pytest

from rag.eval.metrics import contains_answer, normalize_answer, score_run


def test_score_run_needs_a_judged_query():
    for qrels in ({}, {"q": {}}):
        with pytest.raises(ValueError, match="^no query has a relevance judgement$"):
            score_run(qrels, {"q": {"d": 1.0}})


def test_an_empty_reference_is_skipped_not_the_end():
    assert contains_answer("It is in Paris.", ["", "...", "Paris"])
    assert not contains_answer("It is in Paris.", ["", "the"])  # nothing left to look for after normalising


def test_a_latin_reference_inside_a_chinese_answer():
    # the answer has CJK characters, so its spaces are gone: the reference is matched without its spaces too
    assert contains_answer("埃菲尔铁塔由 Gustave Eiffel 设计。", ["Gustave Eiffel"])
    assert not contains_answer("埃菲尔铁塔由 Gustave Eiffel 设计。", ["Gustave Flaubert"])


def test_score_run_a_relevant_document_at_rank_7():
    run = {"q": {f"d{i}": float(100 - i) for i in range(1, 13)}}
    means, _ = score_run({"q": {"d7": 1}}, run)
    # inside @10 (not only @5): nDCG 1/log2(8), reciprocal rank 1/7, found by recall@10, not at rank 1
    assert means == {"ndcg@10": pytest.approx(1 / 3), "recall@10": 1.0, "recall@100": 1.0,
                     "mrr@10": pytest.approx(0.142857, abs=1e-6), "hit@1": 0.0}


def test_articles_dropped_and_kana_hangul_compared_without_spaces():
    assert normalize_answer("An apple a day, the doctor") == "apple day doctor"
    assert normalize_answer("서울 특별시") == "서울특별시"
    assert normalize_answer("カタカナ です") == "カタカナです"


def test_ascii_marks_that_unicode_calls_symbols_are_dropped_as_squad_does():
    # SQuAD's scorer drops string.punctuation; Unicode files ` ^ $ + < = > | ~ under symbols, not punctuation.
    assert normalize_answer("Call `clone` (or ^C) for $5 <now> | ~x") == "call clone or c for 5 now x"
    assert contains_answer("To copy it, you call the `clone` method. [1]", ["clone"])
