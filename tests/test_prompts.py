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
