from rag.answer import prompts


def test_language_of():
    assert prompts.language_of("Who wrote R?") == "en"
    assert prompts.language_of("如何安装 Rust？") == "zh"
    assert prompts.language_of("rustup 是什么工具") == "zh"


def test_cited_numbers_order_range_and_lists():
    answer = "R was written by Ihaka [2]. It is free [1, 2] and fast [7]; see also [3，1]."
    assert prompts.cited_numbers(answer, k=3) == [2, 1, 3]
    assert prompts.cited_numbers("no citations here", k=3) == []


def test_refusal_detection():
    assert prompts.is_refusal("The documents do not say.")
    assert prompts.is_refusal("根据已知信息无法回答该问题。")
    assert not prompts.is_refusal("R was written by Ross Ihaka [1].")
    # A refusal with an explanation and nothing cited is still a refusal.
    assert prompts.is_refusal("The passages only cover R's mirrors. The documents do not say.")
    assert prompts.is_refusal("**The documents do not say.** [1] is about CRAN.")
    # A cited answer with the refusal sentence tacked on (for a part it could not answer) is an answer.
    assert not prompts.is_refusal("R was written by Ross Ihaka and Robert Gentleman [1]. The documents do not say when.")
    assert not prompts.is_refusal("Rust 用 rustup 安装 [2]。根据已知信息无法回答该问题的其余部分。")


def test_context_is_numbered():
    text = prompts.format_context([("a.pdf, p. 1", "alpha"), ("b.md", "beta")])
    assert text.startswith("[1] (a.pdf, p. 1)\nalpha")
    assert "[2] (b.md)\nbeta" in text


def test_context_is_the_numbered_passages_separated_by_blank_lines():
    text = prompts.format_context([("a.pdf, p. 1", "alpha"), ("b.md", "beta\ngamma")])
    assert text == "[1] (a.pdf, p. 1)\nalpha\n\n[2] (b.md)\nbeta\ngamma"


def test_refusal_variants():
    assert prompts.is_refusal("The documents do not say")  # without the full stop
    assert prompts.is_refusal("  the documents do not say!  ")
    assert prompts.is_refusal("资料中没有提到，无法回答。")  # the Chinese model's own wording
    # The first occurrence decides: an answer that opens with the refusal is one, whatever follows.
    assert prompts.is_refusal("The documents do not say. [1] is about CRAN; the documents do not say who wrote R.")
    # Citations on both sides of the refusal sentence count, however far from it.
    assert not prompts.is_refusal("In short, the documents do not say. [1] covers the CRAN mirrors only, not the history of R.")
    assert not prompts.is_refusal("Yes [1]. The documents do not say more.")


def test_citation_lists_and_multi_digit_numbers():
    assert prompts.cited_numbers("See [1、3] and [2 ，4 , 5] and [12].", k=12) == [1, 3, 2, 4, 5, 12]


def test_each_template_has_its_placeholders_in_both_languages():
    import string

    def fields(template: str) -> list[str]:
        return sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})

    assert prompts.STYLES == ("brief", "quote")
    for lang in ("en", "zh"):
        for style in prompts.STYLES:
            assert fields(prompts.ANSWER_SYSTEM[style][lang]) == ["refusal"]
            assert fields(prompts.ANSWER_USER[style][lang]) == ["context", "question"]
        assert fields(prompts.CONDENSE[lang]) == ["history", "question"]


def test_answer_facts_drops_citations_and_fillers():
    assert prompts.answer_facts("Her teapot is purple [1], as the passage states [2, 3].").split() == [
        "teapot", "is", "purple", ",", "as", "the", "."]

