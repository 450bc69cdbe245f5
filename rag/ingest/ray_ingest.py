"""Ingest on a Ray cluster: the local `Ingestor` runs as ever on this machine (manifest decisions, each file
committed whole, in order, by this one writer), while Ray tasks read and split the files and Ray actors embed.

Workers do not see this machine's disk: each file's bytes go to its read task through Ray's object store, and
the task reads them from a private temporary copy, then names the chunks after the path given here. Plain
actors rather than Ray Data's `map_batches`: the pipeline hands the embedder a step of chunks at a time and
commits each file once its last vector is back, so a pool of actors behind `embed_documents` is all it needs,
and an actor lost with its node is dropped and its share embedded by the others (Ray Data would restart it
on a node with a free CPU, which a small cluster may not have).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import ConfigError
from rag.ingest.pipeline import Ingestor
from rag.ingest.prepare import Item, Preparer, one_line

if TYPE_CHECKING:
    import os

    from rag.config import Settings
    from rag.storage.store import FileRecord, Store

INSTALL = "pip install 'rag[ray]'"
# Ray's own switch, read by the head and by each worker; rag sets it for every process it starts on Ray.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
READ_RETRIES = 3  # a read task lost with its worker or node is run again this many times
log = logging.getLogger(__name__)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


@contextlib.contextmanager
def connected(address: str) -> Iterator[Any]:
    """This process joined to the Ray cluster at `address` ("auto": the one this machine belongs to), left
    again at the end; a process already connected (a script that called ray.init) stays connected."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        # include_dashboard: only heeded when ray.init starts a cluster ("local"), which then has none.
        ray.init(address=address, runtime_env={"env_vars": RAY_ENV}, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"ray_address {address!r}: cannot join the Ray cluster ({one_line(exc)})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def ray_ingestor(store: Store, settings: Settings, splitter: Callable[[], Any], fingerprint: str) -> Iterator[Ingestor]:
    """An `Ingestor` over `store` whose files are read and embedded on the Ray cluster at `settings.ray_address`."""
    with connected(settings.ray_address or "auto") as ray:
        embedders = RayEmbeddings(ray, settings)
        try:
            yield Ingestor(store, embedders, splitter, fingerprint, settings.password, ocr=settings.ocr,
                           pdf_tables=settings.pdf_tables,
                           prefetch=2 * embedders.size, readers=lambda preparer, _e, process: RayReaders(ray, preparer))
        finally:
            embedders.close()


class _Embedder:
    """A Ray actor: the embedding model, loaded once, embedding the batches it is sent."""

    def __init__(self, settings: Settings) -> None:
        from rag.embeddings import make_embeddings

        self.embeddings = make_embeddings(settings)

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        # float32 is what the model computes: the array crosses the object store in a quarter of a list's size.
        return np.asarray(self.embeddings.embed_documents(texts), dtype=np.float32)


class RayEmbeddings:
    """`embed_documents` over a pool of `_Embedder` actors, one per CPU of the cluster, started on first use.
    Each call's texts are cut into one share per actor; a share whose actor died (its node gone) is embedded
    again by another, and the dead actor is dropped."""

    def __init__(self, ray: Any, settings: Settings) -> None:
        self.ray, self.settings = ray, settings
        self.size = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # The pipeline embeds 4 batches a step: 4 per actor, so that each gets whole batches.
        self.batch_size = settings.embedding_batch_size * self.size
        self.actors: list[Any] = []

    def _start(self) -> None:
        actor = self.ray.remote(num_cpus=1, max_restarts=0)(_Embedder)
        self.actors = [actor.remote(self.settings) for _ in range(self.size)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if not self.actors:
            self._start()
        share = -(-len(texts) // len(self.actors))
        parts = {i: texts[i : i + share] for i in range(0, len(texts), share)}
        done: dict[int, Any] = {}
        while parts:
            calls = {self.actors[n % len(self.actors)].embed.remote(part): (start, self.actors[n % len(self.actors)])
                     for n, (start, part) in enumerate(parts.items())}
            for ref, (start, actor) in calls.items():
                try:
                    done[start] = self.ray.get(ref)
                    del parts[start]
                except self.ray.exceptions.RayActorError:
                    self._drop(actor)
        return [row.tolist() for start in sorted(done) for row in done[start]]

    def _drop(self, actor: Any) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
            log.warning("an embedding actor was lost (its worker or node died): its chunks go to the %d left",
                        len(self.actors))
        if not self.actors:  # every actor gone: new ones, wherever the cluster has room
            self._start()

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


class RayReaders:
    """The pipeline's reader (see readers.Readers) on Ray: each file is a task that gets its bytes through the
    object store, hashes, loads and splits them, and gives back the file's Item."""

    def __init__(self, ray: Any, preparer: Preparer) -> None:
        self.ray = ray
        # What a task needs of the preparer: not its progress callback, which holds this process's ingest.
        remote = Preparer(preparer.splitter, preparer.load_options, preparer.fingerprint, preparer.empty_fingerprint)
        self.preparer = ray.put(remote)
        self.task = ray.remote(num_cpus=0, max_retries=READ_RETRIES)(read_file)
        self.jobs: dict[Future, tuple[Any, Path, FileRecord | None, os.stat_result]] = {}

    def submit(self, path: Path, old: FileRecord | None, st: os.stat_result) -> Future:
        try:
            data = path.read_bytes()
        except OSError as exc:
            fut: Future = Future()
            fut.set_result(Item(path, "failed", message=f"{path}: cannot read ({exc.strerror})", old=old))
            self.jobs[fut] = (None, path, old, st)
            return fut
        ref = self.task.remote(self.preparer, str(path), data, old, st)
        fut = ref.future()
        self.jobs[fut] = (ref, path, old, st)
        return fut

    def result(self, fut: Future) -> Item:
        ref, path, old, _st = self.jobs.pop(fut)
        try:
            return fut.result()
        except Exception as exc:  # its worker died READ_RETRIES times, or a bug in the task: this file fails alone
            return Item(path, "failed", message=f"{path}: cannot be read on Ray ({one_line(exc)})", old=old)

    def resubmit(self, fut: Future) -> Future:
        _ref, path, old, st = self.jobs.pop(fut)
        return self.submit(path, old, st)

    def close(self) -> None:
        """Stop reading: tasks still running (Ctrl-C, an error) are cancelled, not waited for."""
        for fut, (ref, *_rest) in self.jobs.items():
            if ref is not None and not fut.done():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
        self.jobs.clear()


def read_file(preparer: Preparer, source: str, data: bytes, old: FileRecord | None, st: os.stat_result) -> Item:
    """A Ray task: the file's Item, read from a temporary copy of its bytes and named after `source`."""
    with tempfile.TemporaryDirectory(prefix="rag-ray-") as folder:
        copy = Path(folder, Path(source).name)
        copy.write_bytes(data)
        item = preparer.prepare(copy, old, st)
    return named(item, str(copy), source)


def named(item: Item, copy: str, source: str) -> Item:
    """The Item of a temporary copy, as if read from `source`: its path, record, chunk metadata and messages."""
    item.path = Path(source)
    if item.record is not None:
        item.record = replace(item.record, source=source)
    item.metadatas = [{**meta, "source": source} if "source" in meta else meta for meta in item.metadatas]
    item.message = item.message.replace(copy, source)
    item.warnings = [warning.replace(copy, source) for warning in item.warnings]
    return item
