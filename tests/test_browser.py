"""The chat page in a real browser: headless Chromium (Debian's, driven by Playwright) opens `rag serve`'s page,
asks in English and in Chinese, sees the answer arrive piece by piece, and opens a cited passage; with an API key
set, the page asks for it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.test_serve import running

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does)")
# Nothing but the page's own server: no Google services, updates, QUIC probes or first-run calls.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800}, locale="en-US")
    outside: list[str] = []
    context.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:")) else None)
    pg = context.new_page()
    pg.set_default_timeout(300_000)  # a shared 2-core machine: answers can take a while
    yield pg
    context.close()
    assert outside == [], outside  # the page never reached beyond the server


def ask(pg, question: str):
    """Type a question, press Enter; returns the finished answer's element, the number of updates it got, and the
    sources the server sent with the answer (the last chunk of its event stream carries them)."""
    before = pg.locator(".msg.assistant").count()
    pg.evaluate("""() => { window.__updates = 0;
        new MutationObserver(() => window.__updates++).observe(document.getElementById('log'),
            {childList: true, subtree: true, characterData: true}); }""")
    with pg.expect_response("**/v1/chat/completions") as response:
        pg.fill("#q", question)
        pg.press("#q", "Enter")
    msg = pg.locator(".msg.assistant").nth(before)
    msg.and_(pg.locator("[data-done='1']")).wait_for()
    chunks = [json.loads(line[len("data: "):]) for line in response.value.text().splitlines() if line.startswith("data: {")]
    return msg, pg.evaluate("window.__updates"), next(c["sources"] for c in chunks if "sources" in c)


def test_page_streams_an_answer_with_clickable_sources(small_rag, data_copy, page, tmp_path):
    with running(small_rag, docs=[data_copy]) as (url, _):
        page.goto(url + "/")
        assert page.title() == "rag"
        page.locator("#docs li").first.wait_for()
        assert "R-FAQ.pdf" in page.inner_text("#docs")

        msg, updates, served = ask(page, "What is CRAN?")
        assert updates > 5, "the answer should arrive in pieces, not at once"
        text = msg.locator(".body").inner_text()
        assert "CRAN" in text
        sources = msg.locator(".sources .src")
        assert sources.count() == len(served) >= 1  # every passage the server sent
        first = sources.first.inner_text()
        assert re.match(r"\[\d+\] R-FAQ\.pdf, p\. \d+", first), first

        # A citation (a number in the text, or the source line) opens the cited passage with its file and page.
        target = msg.locator("a.cite").first if msg.locator("a.cite").count() else sources.first
        target.click()
        passage = msg.locator(".passage")
        passage.wait_for()
        n = passage.get_attribute("data-n")
        assert "R-FAQ.pdf" in passage.locator(".where").inner_text()
        cited = next(s for s in served if str(s["n"]) == n)
        assert cited["text"].split("\n")[0] in passage.inner_text()

        # A follow-up is sent with the conversation so far (the server reads it as history).
        with page.expect_request("**/v1/chat/completions") as sent:
            ask(page, "Where is its main site?")
        roles = [m["role"] for m in sent.value.post_data_json["messages"]]
        assert roles == ["user", "assistant", "user"]

        # A new chat in Chinese: the labels switch, and a Chinese answer and its sources come through intact.
        page.click("#reset")
        page.click("#lang")
        assert page.inner_text("#send") == "提问"
        with page.expect_request("**/v1/chat/completions") as sent:
            msg, _, served = ask(page, "如何安装 Rust？")
        assert [m["role"] for m in sent.value.post_data_json["messages"]] == ["user"]
        text = msg.locator(".body").inner_text()
        assert re.search(r"[\u4e00-\u9fff]", text), text
        assert "\ufffd" not in text and "æ" not in text  # no mangled UTF-8
        srcs = msg.locator(".sources .src")
        assert srcs.count() == len(served) >= 1
        assert all("rust-installation.zh.md" in srcs.nth(i).inner_text() for i in range(srcs.count()))
        assert "来源" in msg.inner_text()

        if os.environ.get("RAG_SCREENSHOT"):
            page.screenshot(path=os.environ["RAG_SCREENSHOT"], full_page=False)
        page.screenshot(path=str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_asks_for_the_api_key(small_rag, data_copy, page):
    with running(small_rag, api_key="k3y", docs=[data_copy]) as (url, _):
        page.goto(url + "/")
        page.locator("#keybox").wait_for(state="visible")  # /api/sources answered 401
        page.fill("#key", "k3y")
        page.click("#keysave")
        page.locator("#docs li", has_text="R-FAQ.pdf").wait_for()
        assert page.evaluate("sessionStorage.getItem('rag-key')") == "k3y"
        msg, _, served = ask(page, "What is CRAN?")
        assert "CRAN" in msg.locator(".body").inner_text()
        assert msg.locator(".sources .src").count() == len(served) >= 1
