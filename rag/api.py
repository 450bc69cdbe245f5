"""`RAG`: the one facade the CLI, the server and other Python code stand on. It wires the stages from one
`Settings` and loads each heavy part (embedder, store, chat model) lazily, once per instance."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from rag import privacy
from rag.config import Settings


class RAG:
    """Ingest documents and ask questions about them.

    >>> rag = RAG()                      # defaults < rag.toml < RAG_* environment
    >>> rag.ingest("docs/")              # doctest: +SKIP
    >>> rag.ask("What is R?").text       # doctest: +SKIP

    Ready-made parts may be passed in instead of being built from the settings: `embeddings` (a LangChain
    `Embeddings`), `llm` (a LangChain chat model) and `store` (a `Store`; a path there is the `store` setting);
    `query_embeddings` (what questions are embedded with; default `embeddings` when given, else the light runtime).
    """

    def __init__(self, settings: Settings | None = None, *, embeddings: Any = None, llm: Any = None,
                 store: Any = None, query_embeddings: Any = None, **overrides: Any) -> None:
        privacy.apply()  # the Python entry point: off switches set before any part is imported
        if isinstance(store, (str, os.PathLike)):
            overrides["store"], store = store, None
        # model_validate, not model_copy(update=): an override is checked and converted (a str store becomes a Path).
        self.settings = Settings.load(overrides=overrides) if settings is None else Settings.model_validate(
            {**settings.model_dump(), **overrides})
        self._translations: dict[tuple[str, str], str] = {}  # (question, language) -> the model's translation
        # A part given here fills its cached_property's slot, so it is used instead of being built.
        given = {"embeddings": embeddings, "llm": llm, "store": store, "query_embeddings": query_embeddings}
        self._given = {name for name, part in given.items() if part is not None}
        for name in self._given:
            self.__dict__[name] = given[name]

    # --- the parts, each built on first use ---
    @cached_property
    def embedding_model(self) -> str:
        """The embedding model in use: the setting, or with "auto" the one the store records; MiniLM for a store
        with nothing in it yet (whose first ingest may choose multilingual-e5-small: `ingest`), for a remote
        embedder, and beside embeddings or a store given ready-made."""
        from rag.embeddings.identity import AUTO, MINILM, remote_of
        from rag.storage.errors import StoreError
        from rag.storage.store import recorded_model

        name = self.settings.embedding_model
        if name != AUTO:
            return name
        if self.settings.embedding_url or self._given & {"embeddings", "store"}:
            return MINILM
        recorded = recorded_model(self.settings) or MINILM
        remote = remote_of(recorded)
        if remote is not None:  # vectors from an endpoint: only that endpoint embeds questions like them
            raise StoreError(f"{self.settings.store}: embedded through the endpoint {remote[1]} ({remote[0]}): "
                             f"set embedding_url (RAG_EMBEDDING_URL or rag.toml) to it to use this store")
        return recorded

    @cached_property
    def embedding_model_dir(self) -> Path:
        """The sentence-transformers folder whose tokenizer measures chunks (MiniLM's for multilingual-e5-small)."""
        from rag.embeddings.identity import tokenizer_model
        from rag.models.packaged import embedding_model_path

        return embedding_model_path(tokenizer_model(self.embedding_model))

    @cached_property
    def embeddings(self):
        """The LangChain `Embeddings`: the local model (MiniLM loads torch), or the endpoint at `embedding_url`."""
        from rag.embeddings import make_embeddings

        return make_embeddings(self.settings, name=self.embedding_model)

    @cached_property
    def query_embeddings(self):
        """What questions are embedded with: the `embeddings` when they were given or are loaded already, else
        the same model's float32 vectors from a light runtime (no torch or sentence-transformers to import)."""
        if "embeddings" in self.__dict__:
            return self.embeddings
        from rag.embeddings import make_query_embeddings
        from rag.embeddings.identity import E5

        local = not self.settings.embedding_url and self.embedding_model != E5  # a sentence-transformers folder
        return make_query_embeddings(self.settings, self.embedding_model_dir if local else None, self.embedding_model)

    @property
    def embedding_identity(self) -> str:
        """The embedding model as the store records it: its name, plus its URL when it is remote."""
        from rag.embeddings import embedding_identity

        return embedding_identity(self.embedding_model, self.settings.embedding_url)

    @cached_property
    def store(self):
        """The Chroma collection (embedded, or on the server at chroma_host) and its manifest."""
        from rag.storage.store import Store

        return Store(self.settings, self.embedding_identity)

    @cached_property
    def splitter(self):
        from rag.splitting import Splitter, token_counter

        if self.settings.embedding_url:
            from rag.answer.llm import estimate_tokens

            # No tokenizer of the remote model here (and thousands of calls per file are too many to make over
            # HTTP): chunks are measured with an estimate that errs high, so they stay within chunk_size.
            return Splitter(estimate_tokens, self.settings.chunk_size, self.settings.chunk_overlap)
        limit = _max_tokens(self.embedding_model_dir)
        if self.settings.chunk_size > limit:
            from rag.config import ConfigError

            raise ConfigError(f"chunk_size {self.settings.chunk_size} is longer than the embedding model reads ({limit} tokens)")
        return Splitter(token_counter(self.embedding_model_dir), self.settings.chunk_size, self.settings.chunk_overlap)

    @cached_property
    def model_path(self) -> Path:
        from rag.models.packaged import ModelError
        from rag.models.resolve import chat_model_path

        if self.settings.llm_url:
            raise ModelError(f"the chat model {self.settings.model!r} runs on the server at {self.settings.llm_url}; there is no local file")
        return chat_model_path(self.settings.model, self.settings.cache_dir)

    @cached_property
    def model_warnings(self) -> list[str]:
        """ModelError for a model too large for the memory (unless memory_check is off); warnings for a base
        model or an n_ctx beyond the trained context. For a model on a server: ModelError when the server
        cannot be reached, a warning when it does not list the model's name."""
        if self.settings.llm_url:
            from rag.answer.llm import check_remote_chat

            return check_remote_chat(self.settings)
        from rag.models.gguf import check_model

        return check_model(self.model_path, self.settings.n_ctx, force=not self.settings.memory_check)

    @cached_property
    def llm(self):
        """The LangChain chat model: llama.cpp and the GGUF loaded here, or a client of the server at llm_url."""
        self.model_warnings  # refuse before llama.cpp tries, or before a question goes to a server that is not there
        if self.settings.llm_url:
            from rag.answer.llm import load_remote_chat_model

            return load_remote_chat_model(self.settings)
        from rag.answer.llm import load_chat_model

        return load_chat_model(self.model_path, self.settings)

    @cached_property
    def retriever(self):
        """A LangChain `BaseRetriever` over the store."""
        from concurrent.futures import ThreadPoolExecutor

        # The store opens (chromadb's import: over a second of Python) in a second thread while the question's
        # embedder compiles its model in native code without the GIL: on two cores the two overlap.
        with ThreadPoolExecutor(1, thread_name_prefix="rag-open-store") as pool:
            store = pool.submit(self._open_store_for_questions)
            embeddings = self.query_embeddings
            store = store.result()
        from rag.retrieval.hybrid import HybridRetriever

        s = self.settings
        translating = self.translates
        return HybridRetriever(store=store, embeddings=embeddings, k=s.k, mode=s.retrieval, mmr=s.mmr,
                               translate=self.translate if translating else None,
                               languages=store.languages if translating else None, relevance_floor=s.min_score)

    @property
    def translates(self) -> bool:
        """Whether cross-lingual questions are translated: the setting, or with "auto" the chat model's own."""
        from rag.models.packaged import translates

        setting = self.settings.translate_questions
        return translates(self.settings.model) if setting == "auto" else setting == "on"

    def translate(self, question: str, language: str) -> str:
        """The chat model's translation of a question into `language` ("en" or "zh"), its reply as given."""
        from langchain_core.messages import HumanMessage

        from rag.answer.prompts import TRANSLATE

        key = (question, language)
        if key not in self._translations:  # a question asked again (or for more passages) is not translated again
            if len(self._translations) >= 256:
                self._translations.clear()  # a long-running server: keep the memory bounded
            client = getattr(self.llm, "client", None)
            if client is not None:
                client.reset()  # as for answers: the same question translates the same whatever came before
            # One line is the whole translation: stopping there keeps a model that goes on to answer from costing time.
            llm = self.llm.bind(seed=self.settings.seed, stop=["\n"])
            self._translations[key] = str(llm.invoke([HumanMessage(TRANSLATE[language].format(question=question))]).content)
        return self._translations[key]

    def _open_store_for_questions(self):
        from rag.retrieval.hybrid import HybridRetriever  # noqa: F401 (LangChain's retriever stack, imported here too)

        store = self.store
        store.open()
        if self.settings.retrieval != "dense":
            store.lexical()  # the BM25 index, loaded (or brought up to date) before the first question
        return store

    @cached_property
    def chain(self):
        """The LangChain `Runnable`: question (or {"question", "chat_history"}) in; answer and sources out."""
        from rag.answer.chain import AnswerChain

        s = self.settings
        client = None
        if s.llm_url:
            from rag.answer.llm import remote_token_counter

            # The server's own tokenizer when it offers one, else an estimate that errs high; never tiktoken.
            count, _ = remote_token_counter(self.settings)
        else:
            client = getattr(self.llm, "client", None)
            count = (lambda text: len(client.tokenize(text.encode("utf-8"), add_bos=False, special=True))) if client else None
        fresh = client.reset if client is not None else None  # llama_cpp.Llama.reset: forget the last prompt
        # The seed goes with every call, so the same question gets the same answer, not the next draw.
        llm = self.llm.bind(seed=self.settings.seed)
        focus = tokenize = None
        if s.focus_share < 1:
            from rag.answer.focus import Focus
            from rag.storage.lexical import tokenize

            focus = Focus(share=s.focus_share)
        return AnswerChain(self.retriever, llm, s.n_ctx, s.max_tokens, s.min_score, count, focus=focus,
                           tokenize=tokenize, embeddings=self.query_embeddings, support=self._support,
                           min_support=s.min_support, style=self.answer_style, fresh_start=fresh).build()

    @property
    def answer_style(self) -> str:
        """The answer prompt's wording: the setting, or with "auto" the chat model's own."""
        from rag.models.packaged import answer_style

        return answer_style(self.settings.model) if self.settings.answer_style == "auto" else self.settings.answer_style

    def _support(self, answer: str, passages: list[str]) -> float:
        """The IDF-weighted share of the answer's words found in the passages (the store's BM25 statistics)."""
        return self.store.lexical().share(answer, "\n\n".join(passages))

    @property
    def fingerprint(self) -> str:
        """Identifies the settings that shape chunks and vectors; a change re-embeds files."""
        s = self.settings
        data = {"embedding_model": self.embedding_identity, "chunk_size": s.chunk_size, "chunk_overlap": s.chunk_overlap, "splitter": 1,
                # Its presence also re-reads, once, stores ingested before PDF tables were read at all.
                "pdf_tables": s.pdf_tables}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    # --- ingesting ---
    def ingest(self, *paths: str | Path | Iterable[str | Path], prune: bool = False, progress=None):
        """Ingest files and folders (recursive); returns an `IngestReport`."""
        flat: list[str | Path] = []
        for p in paths:
            flat.extend([p] if isinstance(p, (str, Path)) else p)
        self._choose_embedding_model(flat)
        # The embedder and the splitter are loaded only when a file needs reading: a re-ingest with nothing to
        # do settles every file from the manifest without importing torch.
        if self.settings.ray_address:
            from rag.ingest.ray_ingest import import_ray, ray_ingestor

            import_ray()  # a missing extra is said before the store is opened
            # The Ray actors build their embedder from the settings: the model this store uses, "auto" resolved.
            resolved = self.settings.model_copy(update={"embedding_model": self.embedding_model})
            with ray_ingestor(self.store, resolved, lambda: self.splitter, self.fingerprint) as ingestor:
                return ingestor.run(flat, prune=prune, progress=progress)
        report = self._ingestor().run(flat, prune=prune, progress=progress)
        report.warnings.extend(self._embedding_advice(report.ingested))
        return report

    # Built for one embedding model: forgotten when a new store's first ingest chooses another.
    _EMBEDDING_PARTS = ("embedding_model", "embedding_model_dir", "embeddings", "query_embeddings", "store",
                        "splitter", "retriever", "chain")

    def _choose_embedding_model(self, paths: list[str | Path]) -> None:
        """embedding_model "auto" over a store with nothing in it yet: multilingual-e5-small when the files hold
        Chinese text, else MiniLM (rag.ingest.embedder); the store then records it for every later run."""
        from rag.embeddings.identity import AUTO
        from rag.ingest.embedder import for_new_store
        from rag.storage.store import recorded_model

        s = self.settings
        if s.embedding_model != AUTO or s.embedding_url or self._given & {"embeddings", "store"}:
            return
        if recorded_model(s) is not None:
            return
        chosen = for_new_store(paths, s.password)
        if chosen != self.embedding_model:
            for part in self._EMBEDDING_PARTS:
                if part not in self._given:
                    self.__dict__.pop(part, None)
            self.__dict__["embedding_model"] = chosen

    def _embedding_advice(self, ingested: list[str]) -> list[str]:
        """One line when Chinese text went into a MiniLM store (MiniLM reads Chinese as unknown word pieces)."""
        from rag.embeddings.identity import E5, MINILM

        if self.embedding_model != MINILM or self.settings.embedding_url or not ingested:
            return []
        # Judged on the chunks just stored: reading the files again would parse every one twice.
        languages = self.store.file_languages(ingested)
        chinese = next((f for f in ingested if languages.get(f) == "zh"), None)
        if chinese is None:
            return []
        return [f"{chinese}: Chinese text in a store embedded with {MINILM}, which cannot read Chinese: "
                f"for Chinese and cross-lingual questions re-embed with `rag reset` then `rag ingest "
                f"--embedding-model {E5} ...`"]

    def watcher(self, *folders: str | Path, debounce: float = 1.0):
        """A `Watcher` keeping the store in sync with `folders`: `.run(on_batch, stop)` syncs them whole, then
        each settled batch of changes (a file settles after `debounce` seconds unchanged), until `stop` is set."""
        from rag.ingest.watch import Watcher

        return Watcher(self._ingestor(), folders, self.settings.store, debounce)

    def _ingestor(self):
        """The Ingestor reading and embedding on this machine, as the settings say."""
        from rag.ingest import Ingestor

        s = self.settings
        return Ingestor(self.store, lambda: self.embeddings, lambda: self.splitter, self.fingerprint, s.password,
                        ocr=s.ocr, pdf_tables=s.pdf_tables)

    def files(self):
        """Every ingested file, as the manifest knows it."""
        return self.store.files()

    def delete(self, path: str | Path) -> int:
        """Remove one file's chunks; returns how many were removed (0 when it was not ingested)."""
        source = str(Path(path).resolve())
        with self.store.writer():
            return self.store.delete_file(source)

    def reset(self) -> None:
        """Empty the store."""
        with self.store.writer():
            self.store.reset()

    # --- asking ---
    def ask(self, question: str, history: Sequence[Any] | None = None):
        """Answer one question from the documents; returns an `Answer` (text, cited sources)."""
        from rag.answer.chain import answer_from_output

        return answer_from_output(self.chain.invoke({"question": question, "chat_history": list(history or [])}))

    def stream(self, question: str, history: Sequence[Any] | None = None) -> Iterator[Any]:
        """Yield the answer's text as it is generated, then the finished `Answer` as the last item."""
        from rag.answer.chain import answer_from_output

        out: dict[str, Any] = {}
        for chunk in self.chain.stream({"question": question, "chat_history": list(history or [])}):
            for key, value in chunk.items():
                if key == "answer":
                    out["answer"] = out.get("answer", "") + value
                    yield value
                else:
                    out[key] = value
        yield answer_from_output(out)

    def chat(self) -> ChatSession:
        """A conversation whose follow-up questions are read in the light of the earlier ones."""
        return ChatSession(self)


class ChatSession:
    """Keeps the history of one conversation."""

    def __init__(self, rag: RAG, max_turns: int = 6) -> None:
        self.rag = rag
        self.history: list[tuple[str, str]] = []
        self.max_turns = max_turns

    def stream(self, question: str) -> Iterator[Any]:
        answer = None
        for item in self.rag.stream(question, self.history[-2 * self.max_turns :]):
            if not isinstance(item, str):
                answer = item
            yield item
        if answer is not None:
            self.history += [("human", question), ("ai", answer.text)]

    def ask(self, question: str):
        *_, answer = self.stream(question)
        return answer


def _max_tokens(model_dir: Path) -> int:
    """Longest input the embedding model reads, minus its two special tokens, without loading it."""
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]) - 2
    except (OSError, KeyError, ValueError):
        return 254
