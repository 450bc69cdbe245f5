"""Sentence selection for shorter prompts (rag/answer/focus.py): splitting, scoring and picking, on fixed text."""

from rag.answer.focus import Focus, focus_passages, overlap_scores, pick, split_sentences
from rag.storage.lexical import tokenize

RHINE = ("The Rhine is a European river. It begins in the Swiss Alps. Its length is 1,230 km. "
         "It flows into the North Sea. Cologne is the biggest city on it.")


def test_split_sentences_english_and_chinese():
    assert split_sentences(RHINE) == ["The Rhine is a European river.", "It begins in the Swiss Alps.",
                                      "Its length is 1,230 km.", "It flows into the North Sea.",
                                      "Cologne is the biggest city on it."]
    assert split_sentences("莱茵河是欧洲的河流。全长1230公里！流入北海\n\n科隆是最大城市") == [
        "莱茵河是欧洲的河流。", "全长1230公里！", "流入北海", "科隆是最大城市"]
    # A decimal point or a version number is not a sentence end.
    assert split_sentences("It costs 4.9 euros in v1.2. Then more.") == ["It costs 4.9 euros in v1.2.", "Then more."]


def test_overlap_weighs_rare_question_words_more():
    sentences = ["the river length", "the river", "nothing here"]
    # Question words (stemmed): river (in 2 of 3 sentences), length (in 1 of 3). IDF = ln(1 + (3 - df + .5)/(df + .5)):
    # river ln(1 + 1.5/2.5) = 0.4700, length ln(1 + 2.5/1.5) = 0.9808; shares 1, 0.4700/1.4508 = 0.3240, 0.
    assert [round(x, 4) for x in overlap_scores("river length?", sentences, tokenize)] == [1.0, 0.324, 0.0]


def test_pick_keeps_the_best_with_its_neighbours_within_budget():
    scores = [0.1, 0.2, 0.9, 0.3, 0.0]
    # Budget 30 characters, 10 each: the best (2), then its neighbours 1 and 3.
    assert pick(scores, [10] * 5, 30, neighbours=1) == [1, 2, 3]
    # No neighbours: the three best.
    assert pick(scores, [10] * 5, 30, neighbours=0) == [1, 2, 3]
    assert pick(scores, [10] * 5, 20, neighbours=0) == [2, 3]
    # The best sentence is kept even when it alone is over the budget.
    assert pick(scores, [10, 10, 50, 10, 10], 20, neighbours=1) == [2]


def test_focus_keeps_the_answering_sentence_and_marks_gaps():
    out = focus_passages("How long is the Rhine in km?", [RHINE, "Short one."], tokenize, None,
                         Focus(share=0.5, neighbours=0))
    # The length sentence scores best (rhine, km, long?); 'long' does not stem to 'length', km and rhine decide.
    assert out[0] == "The Rhine is a European river. … Its length is 1,230 km. …"
    assert out[1] == "Short one."  # one sentence: kept whole


def test_cosines_literal_values():
    import pytest

    from rag.answer.focus import cosines

    assert cosines([1.0, 0.0], [[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0]]) == pytest.approx(
        [1.0, 0.0, 0.70710678, 0.0], abs=1e-8)
