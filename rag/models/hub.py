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
Every rag entry point forces HF_HUB_OFFLINE=1 for privacy; `pull` lifts it for its own requests only, unless the user
had set HF_HUB_OFFLINE=1 themselves (see `_user_wants_offline`).
"""

from __future__ import annotations

import importlib.metadata
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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


def _user_wants_offline() -> bool:
    """Whether the user (not rag/_privacy.py) set HF_HUB_OFFLINE=1.

    rag's entry points overwrite HF_HUB_OFFLINE in os.environ, so the user's own value must come from
    `rag._privacy.user_value`, which records the environment as it was before. Until that exists, the user's
    value is taken as unset."""
    from rag import privacy as _privacy

    user_value = getattr(_privacy, "user_value", None)
    value = user_value("HF_HUB_OFFLINE") if callable(user_value) else None
    return str(value or "").strip().upper() in _TRUE


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Let huggingface_hub make requests for the duration of the block.

    huggingface_hub reads HF_HUB_OFFLINE into `constants.HF_HUB_OFFLINE` when it is imported, and every request
    checks `constants.is_offline_mode()`, which returns that attribute: setting it is enough, and the
    environment (which other libraries read) stays as rag/_privacy.py set it."""
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
    import httpx
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    from huggingface_hub.utils.tqdm import silent_tqdm

    base = endpoint()
    models_dir = Path(models_dir).expanduser()
    target = models_dir / Path(filename).name
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    partial: Path | None = None
    size: int | None = None
    try:
        with _online():
            url = hf_hub_url(repo_id, filename, revision=revision, endpoint=base)
            headers = build_hf_headers(token=token, library_name="rag", library_version=importlib.metadata.version("rag"))
            meta = get_hf_file_metadata(url, token=token, headers=headers, endpoint=base, retry_on_errors=False)
            etag, size = meta.etag, meta.size
            if not etag:
                raise ModelError(f"{where}: the hub sent no checksum (ETag) for the file; not downloading what cannot be verified")
            etag = etag.lower()
            if size is None:
                raise ModelError(f"{where}: the hub did not say how large the file is")
            download_url = meta.location or url
            if urlparse(download_url).hostname != urlparse(url).hostname:
                headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub

            if target.is_file() and target.stat().st_size == size:
                if on_verify:
                    on_verify()
                if _matches(target, etag, size):
                    return PullResult(target, size, etag if SHA256.match(etag) else None, meta.commit_hash,
                                      already_present=True)

            models_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{etag[:16]}.incomplete")
            for stale in models_dir.glob(f"{glob_escape(target.name)}.*.incomplete"):
                if stale != partial:
                    stale.unlink(missing_ok=True)  # an earlier version of the file: useless for this one
            with _locked_partial(partial) as fh:
                resumed = fh.seek(0, os.SEEK_END)
                if resumed > size:
                    fh.truncate(0)
                    resumed = 0
                free = shutil.disk_usage(models_dir).free
                if size - resumed > free:
                    raise ModelError(f"{where}: needs {size - resumed:,} bytes but {models_dir} has {free:,} free")
                try:
                    http_get(download_url, fh, resume_size=resumed, headers=headers, expected_size=size,
                             displayed_filename=target.name, tqdm_class=None if progress else silent_tqdm)
                except OSError as exc:
                    if "Consistency check failed" in str(exc):  # the server sent more or fewer bytes than it said
                        partial.unlink(missing_ok=True)
                        raise ModelError(f"{where}: the download had the wrong size ({str(exc).splitlines()[0]}); "
                                         "the download was deleted: run the command again") from None
                    raise
                fh.flush()
                os.fsync(fh.fileno())
                if on_verify:
                    on_verify()
                if not _matches(partial, etag, size):
                    got = _sha256(partial)
                    partial.unlink(missing_ok=True)
                    raise ModelError(f"{where}: checksum mismatch (sha256 {got[:16]}… but the hub says {etag[:16]}…); "
                                     "the download was deleted: run the command again")
                os.replace(partial, target)
            return PullResult(target, size, etag if SHA256.match(etag) else None, meta.commit_hash, resumed_from=resumed)
    except ModelError:
        raise
    except hf_errors.GatedRepoError:
        raise ModelError(f"{repo_id} is gated: accept its licence on its page on the hub, then set HF_TOKEN") from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelError(f"{repo_id}: no such model repository on {base} (a private one needs HF_TOKEN)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelError(f"{repo_id}: no revision {revision!r}") from None
    except hf_errors.RemoteEntryNotFoundError:
        raise ModelError(f"{repo_id} has no file {filename!r} (see the repository's file list on the hub)") from None
    except hf_errors.HfHubHTTPError as exc:
        raise ModelError(f"{where}: the hub answered {_first_line(exc)}{_kept(partial, size)}") from None
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ModelError(f"{where}: cannot reach {base} ({_first_line(exc)}); check the network or HF_ENDPOINT"
                         f"{_kept(partial, size)}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ModelError(f"{where}: download failed ({type(exc).__name__}: {_first_line(exc)}){_kept(partial, size)}") from None


def _kept(partial: Path | None, size: int | None) -> str:
    """What an interrupted download left for the next run to resume."""
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, etag: str, size: int) -> bool:
    """Whether the file is the one the hub describes: its sha256 for LFS files (the ETag of every GGUF), else
    the git blob sha1 of a small file kept in git itself."""
    if path.stat().st_size != size:
        return False
    if SHA256.match(etag):
        return _sha256(path) == etag
    if GIT_SHA1.match(etag):
        digest = hashlib.sha1(f"blob {size}\0".encode())
        with path.open("rb") as fh:
            while block := fh.read(8 << 20):
                digest.update(block)
        return digest.hexdigest() == etag
    raise ModelError(f"{path.name}: the hub's ETag {etag[:20]!r} is neither a sha256 nor a git sha1; cannot verify the file")
