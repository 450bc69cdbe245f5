"""Questions from the command line: `rag ask` (one answer) and `rag chat` (a session with follow-ups), each
streamed to stdout with its numbered sources, answered by the warm background server (rag/daemon) when there
is one to use, else in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rag.cli.common import (handle_errors, make_rag, model_options, settings, show_context_option, store_option,
                            verbose_option, warn)

CHAT_HELP = "/sources, /reset, /exit"

no_daemon_option = click.option("--no-daemon", is_flag=True,
                                help="Answer in this process: neither use nor start the background server that keeps "
                                     "the model loaded between commands (see keep_alive).")


@click.command()
@click.argument("question")
@store_option
@model_options
@click.option("--source", "source_glob", default=None, help="Only search files whose path or name matches this glob.")
@show_context_option
@verbose_option
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object {"answer": str, "sources": [{"source", "page", "text", "score"}]}.')
@no_daemon_option
@click.pass_context
@handle_errors
def ask(ctx: click.Context, question: str, store: Path | None, source_glob: str | None, show_context: bool,
        verbose: bool, as_json: bool, no_daemon: bool, **flags: Any) -> None:
    """Answer QUESTION from the ingested documents, streaming, with numbered sources (file, page).

    When the documents do not hold the answer, it says so instead of guessing. The model stays loaded in a
    background server for keep_alive seconds (default 300), so the next question starts at once.
    """
    from rag.daemon.paths import DaemonGone

    try:
        _answer(_asker(ctx, store, flags, no_daemon, source_glob).stream(question), as_json, show_context, verbose)
    except DaemonGone:  # it reached keep_alive just now: start it again
        _answer(_asker(ctx, store, flags, no_daemon, source_glob).stream(question), as_json, show_context, verbose)


@click.command()
@store_option
@model_options
@show_context_option
@verbose_option
@no_daemon_option
@click.pass_context
@handle_errors
def chat(ctx: click.Context, store: Path | None, show_context: bool, verbose: bool, no_daemon: bool,
         **flags: Any) -> None:
    """Talk with your documents: an interactive session where follow-up questions keep their context.

    Type a question and press Enter. /sources shows the passages behind the last answer, /reset forgets the
    conversation, /exit (or /quit, Ctrl-D) ends the session. Ctrl-C while an answer streams stops that answer,
    not the session.
    """
    from rag.api import ChatSession

    session = ChatSession(_asker(ctx, store, flags, no_daemon))
    click.echo("Ask about your documents (/sources: passages of the last answer, /reset: forget the conversation, "
               "/exit: end; Ctrl-C stops an answer).", err=True)
    last = None
    while True:
        try:
            line = click.prompt("\n>", prompt_suffix=" ", default="", show_default=False, err=True).strip()
        except (EOFError, click.exceptions.Abort):
            click.echo("", err=True)
            return
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/"):
            last = _chat_command(line, session, last)
        elif line:
            last = _chat_turn(session, line, lambda: _asker(ctx, store, flags, no_daemon), show_context, verbose) or last


def _chat_turn(session: Any, line: str, reconnect: Any, show_context: bool, verbose: bool) -> Any:
    """Answer one chat question; Ctrl-C stops the answer, not the session. A background server that reached
    keep_alive while the user was typing is started again (`reconnect`)."""
    from rag.daemon.paths import DaemonGone

    try:
        try:
            return _answer(session.stream(line), False, show_context, verbose)
        except DaemonGone:
            session.rag = reconnect()
            return _answer(session.stream(line), False, show_context, verbose)
    except KeyboardInterrupt:
        click.echo("\n(stopped)", err=True)
        return None


def _chat_command(line: str, session: Any, last: Any) -> Any:
    """Run one of chat's slash commands (but /exit); returns the answer /sources refers to from now on."""
    if line == "/reset":
        session.history.clear()
        click.echo("(conversation forgotten)", err=True)
        return None
    if line == "/sources":
        if last is None:
            click.echo("(no answer yet)", err=True)
        else:
            _print_sources(last, show_context=True)
        return last
    click.echo(f"(unknown command {line.split()[0]}: {CHAT_HELP})", err=True)
    return last


def _asker(ctx: click.Context, store: Path | None, flags: dict[str, Any], no_daemon: bool,
           source_glob: str | None = None) -> Any:
    """What answers, with `stream(question, history)`: the warm background server for these settings (started
    when there is none), or a `RAG` in this process (--no-daemon, keep_alive 0, a model on a server, or a
    background server that does not answer). `source_glob`: search only the files it matches."""
    current = settings(ctx, store=store, **flags)
    if not no_daemon and current.keep_alive > 0 and not current.llm_url:
        from rag.daemon.lifecycle import connect

        client = connect(current, notice=lambda line: click.echo(f"note: {line}", err=True))
        if client is not None:
            warn(client.warnings)
            client.source_glob = source_glob
            return client
    rag = _ready_rag(ctx, store, flags)
    rag.retriever.source_glob = source_glob
    return rag


def _ready_rag(ctx: click.Context, store: Path | None, flags: dict[str, Any]) -> Any:
    """A `RAG` with something to answer from; the chat model's warnings are shown before the first answer."""
    from rag.config import ConfigError

    rag = make_rag(ctx, store=store, **flags)
    if rag.store.count() == 0:
        raise ConfigError(f"{rag.settings.store}: the store is empty; run `rag ingest PATH` first")
    warn(rag.model_warnings)
    return rag


def _answer(streamer: Any, as_json: bool, show_context: bool, verbose: bool) -> Any:
    """Print what `streamer` yields (text, then the finished `Answer`) and the sources; returns the `Answer`."""
    if as_json:
        *_, answer = streamer
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
    else:
        answer = None
        try:
            for item in streamer:
                if isinstance(item, str):
                    click.echo(item, nl=False)
                else:
                    answer = item
        finally:
            streamer.close()  # on Ctrl-C: stop generating now and release the model for the next question
        click.echo()
        if answer is not None:
            _print_sources(answer, show_context)
    if verbose and answer is not None:
        _print_dropped(answer)
    return answer


# Why an answer the model gave was turned into a refusal; its text was shown as it streamed.
_UNSUPPORTED = {
    "support": "the passages do not hold most of this answer's words",
}


def _print_sources(answer: Any, show_context: bool) -> None:
    sources = answer.sources
    if getattr(answer, "translated_question", None):
        click.echo(f"\n(Searched in the documents' language as: {answer.translated_question})")
    if answer.refused:
        sources = answer.context[:3]
        why = _UNSUPPORTED.get(getattr(answer, "refused_by", None) or "")
        if why:
            click.echo(f"\n(Not supported: {why}; treat it as \"the documents do not say\".)")
        if sources:
            click.echo("\nNearest passages (not enough to answer):")
    elif sources:
        click.echo("\nSources:")
    for s in sources:
        click.echo(f"  [{s.number}] {s.label}  (score {s.score:.2f})")
        if show_context:
            click.echo("      " + s.text.replace("\n", "\n      "))
    if show_context and not answer.refused:
        for s in answer.context:
            if s not in sources:
                click.echo(f"  [{s.number}] {s.label}  (score {s.score:.2f}, not cited)")
                click.echo("      " + s.text.replace("\n", "\n      "))


def _print_dropped(answer: Any) -> None:
    from rag.daemon.client import label  # light: a warm answer must not import the answering stage

    for d in answer.dropped:
        click.echo(f"dropped: {label(d['source'], d['page'])} (score {d['score']:.2f}): {d['reason']}", err=True)


COMMANDS = {"ask": ask, "chat": chat}
