"""`rag models pull`: the one place `rag` goes online. Downloads one file of a Hugging Face hub repository into
the models folder: with a progress bar, resumable across runs, and checked against the hub's checksum.

Built on huggingface_hub 1.33.0's own parts (`hf_hub_url`, `get_hf_file_metadata`, `http_get`) rather than
`hf_hub_download`, because in that version `hf_hub_download`
- downloads into a per-process temporary file that it deletes when interrupted (huggingface_hub PR #4228), so
  a 8 GB download cut at 90% starts again from zero; and
- checks only the size of what it received, never its sha256.
Here the partial file is kept next to the target as `<file>.<sha256[:16]>.incomplete` and continued with an
HTTP Range request, and the finished file's sha256 is compared with the LFS sha256 the hub sends as
`X-Linked-Etag` before the file takes its final name.

The endpoint is $HF_ENDPOINT (default https://huggingface.co), the token $HF_TOKEN (or `hf auth login`'s).
Every rag entry point forces HF_HUB_OFFLINE=1 for privacy (rag/privacy.py); `pull` lifts it for its own requests
only, unless the user had set HF_HUB_OFFLINE=1 themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rag.models.packaged import ModelError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass
class PullResult:
    path: Path
    size: int
    sha256: str | None  # None for a small (non-LFS) file, checked by its git blob sha1 instead
    commit: str | None
    resumed_from: int = 0  # bytes already there from an earlier, interrupted run
    already_present: bool = False


@dataclass
class _Job:
    """One `pull`: the file asked for, and what the hub said of it (for the checks and the error messages)."""

    repo_id: str
    filename: str
    revision: str | None
    token: str | None
    target: Path
    base: str  # the endpoint
    etag: str = ""  # the sha256 of an LFS file, else a git blob sha1
    size: int | None = None
    partial: Path | None = None  # <file>.<etag[:16]>.incomplete, once the download has started

    @property
    def where(self) -> str:
        return f"{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")

    @property
    def sha256(self) -> str | None:
        return self.etag if SHA256.match(self.etag) else None


def _user_wants_offline() -> bool:
    """Whether the user set HF_HUB_OFFLINE=1 (rag's entry points overwrite it in os.environ: rag/privacy.py
    records the environment as it was before)."""
    from rag import privacy

    return str(privacy.user_value("HF_HUB_OFFLINE") or "").strip().upper() in _TRUE


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Let huggingface_hub make requests for the duration of the block.

    huggingface_hub reads HF_HUB_OFFLINE into `constants.HF_HUB_OFFLINE` when it is imported, and every request
    checks `constants.is_offline_mode()`, which returns that attribute: setting it is enough, and the
    environment (which other libraries read) stays as rag/privacy.py set it."""
    if _user_wants_offline():
        raise ModelError("HF_HUB_OFFLINE=1 is set in your environment; unset it to let `rag models pull` download")
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def endpoint() -> str:
    # Read here rather than from huggingface_hub.constants.ENDPOINT: that is fixed when huggingface_hub is first
    # imported, which in a long-lived process (tests, a server) may be before HF_ENDPOINT was set.
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def pull(repo_id: str, filename: str, models_dir: Path, *, revision: str | None = None, token: str | None = None,
         progress: bool = True, on_verify: Callable[[], None] | None = None) -> PullResult:
    """Download `filename` of model repository `repo_id` into `models_dir` (resuming an earlier partial
    download) and verify its checksum. ModelError, one line, for whatever goes wrong."""
    job = _Job(repo_id, filename, revision, token, Path(models_dir).expanduser() / Path(filename).name, endpoint())
    with _hub_errors(job), _online():
        commit, url, headers = _ask_hub(job)
        if job.target.is_file() and job.target.stat().st_size == job.size:
            if on_verify:
                on_verify()
            if _matches(job.target, job.etag, job.size):
                return PullResult(job.target, job.size, job.sha256, commit, already_present=True)
        resumed = _download(job, url, headers, progress, on_verify)
        return PullResult(job.target, job.size, job.sha256, commit, resumed_from=resumed)


def _ask_hub(job: _Job) -> tuple[str | None, str, dict[str, str]]:
    """The file's checksum and size (into `job`), the commit, and the URL and headers to download it with."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(job.repo_id, job.filename, revision=job.revision, endpoint=job.base)
    headers = build_hf_headers(token=job.token, library_name="rag", library_version=importlib.metadata.version("rag"))
    meta = get_hf_file_metadata(url, token=job.token, headers=headers, endpoint=job.base, retry_on_errors=False)
    if not meta.etag:
        raise ModelError(f"{job.where}: the hub sent no checksum (ETag) for the file; not downloading what cannot be verified")
    if meta.size is None:
        raise ModelError(f"{job.where}: the hub did not say how large the file is")
    job.etag, job.size = meta.etag.lower(), meta.size
    download_url = meta.location or url
    if urlparse(download_url).hostname != urlparse(url).hostname:
        headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub
    return meta.commit_hash, download_url, headers


def _download(job: _Job, url: str, headers: dict[str, str], progress: bool,
              on_verify: Callable[[], None] | None) -> int:
    """Download into the partial file, continuing what is there, verify it and give it its name; the bytes
    that were there already."""
    folder, size = job.target.parent, job.size or 0
    folder.mkdir(parents=True, exist_ok=True)
    partial = job.partial = job.target.with_name(f"{job.target.name}.{job.etag[:16]}.incomplete")
    for stale in folder.glob(f"{glob_escape(job.target.name)}.*.incomplete"):
        if stale != partial:
            stale.unlink(missing_ok=True)  # an earlier version of the file: useless for this one
    with _locked_partial(partial) as fh:
        resumed = fh.seek(0, os.SEEK_END)
        if resumed > size:
            fh.truncate(0)
            resumed = 0
        free = shutil.disk_usage(folder).free
        if size - resumed > free:
            raise ModelError(f"{job.where}: needs {size - resumed:,} bytes but {folder} has {free:,} free")
        _http_get(job, fh, url, headers, resumed, progress)
        fh.flush()
        os.fsync(fh.fileno())
        if on_verify:
            on_verify()
        if not _matches(partial, job.etag, size):
            got = _file_hash(partial, "sha256")
            partial.unlink(missing_ok=True)
            raise ModelError(f"{job.where}: checksum mismatch (sha256 {got[:16]}… but the hub says {job.etag[:16]}…); "
                             "the download was deleted: run the command again")
        os.replace(partial, job.target)
    return resumed


def _http_get(job: _Job, fh, url: str, headers: dict[str, str], resumed: int, progress: bool) -> None:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils.tqdm import silent_tqdm

    try:
        http_get(url, fh, resume_size=resumed, headers=headers, expected_size=job.size,
                 displayed_filename=job.target.name, tqdm_class=None if progress else silent_tqdm)
    except OSError as exc:
        if "Consistency check failed" in str(exc):  # the server sent more or fewer bytes than it said
            if job.partial is not None:
                job.partial.unlink(missing_ok=True)
            raise ModelError(f"{job.where}: the download had the wrong size ({str(exc).splitlines()[0]}); "
                             "the download was deleted: run the command again") from None
        raise


@contextlib.contextmanager
def _hub_errors(job: _Job) -> Iterator[None]:
    """What goes wrong with the hub or the network, as one-line ModelErrors."""
    import httpx
    from huggingface_hub import errors as hf_errors

    where, repo_id, base = job.where, job.repo_id, job.base
    try:
        yield
    except ModelError:
        raise
    except hf_errors.GatedRepoError:
        raise ModelError(f"{repo_id} is gated: accept its licence on its page on the hub, then set HF_TOKEN") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelError(f"{repo_id}: no such model repository on {base} (a private one needs HF_TOKEN)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelError(f"{repo_id}: no revision {job.revision!r}") from None
    except hf_errors.RemoteEntryNotFoundError:
        raise ModelError(f"{repo_id} has no file {job.filename!r} (see the repository's file list on the hub)") from None
    except hf_errors.HfHubHTTPError as exc:
        raise ModelError(f"{where}: the hub answered {_first_line(exc)}{_kept(job)}") from None
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ModelError(f"{where}: cannot reach {base} ({_first_line(exc)}); check the network or HF_ENDPOINT"
                         f"{_kept(job)}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ModelError(f"{where}: download failed ({type(exc).__name__}: {_first_line(exc)}){_kept(job)}") from None


def _kept(job: _Job) -> str:
    """What an interrupted download left for the next run to resume."""
    partial, size = job.partial, job.size
    with contextlib.suppress(OSError):
        if partial is not None and size and partial.is_file() and partial.stat().st_size:
            return f"; {partial.stat().st_size:,} of {size:,} bytes kept: run the same command to resume"
    return ""


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]


@contextlib.contextmanager
def _locked_partial(partial: Path) -> Iterator:
    """The partial file, opened for appending and locked against a second `rag models pull` of the same file."""
    fh = partial.open("ab")
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except BlockingIOError:
            raise ModelError(f"{partial.name}: another `rag models pull` is downloading this file") from None
        yield fh
    finally:
        fh.close()


def _file_hash(path: Path, digest: str | Callable[[], Any]) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, digest).hexdigest()


def _matches(path: Path, etag: str, size: int) -> bool:
    """Whether the file is the one the hub describes: its sha256 for LFS files (the ETag of every GGUF), else
    the git blob sha1 of a small file kept in git itself."""
    if path.stat().st_size != size:
        return False
    if SHA256.match(etag):
        return _file_hash(path, "sha256") == etag
    if GIT_SHA1.match(etag):
        return _file_hash(path, lambda: hashlib.sha1(f"blob {size}\0".encode())) == etag
    raise ModelError(f"{path.name}: the hub's ETag {etag[:20]!r} is neither a sha256 nor a git sha1; cannot verify the file")
