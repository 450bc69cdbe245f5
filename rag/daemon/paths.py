"""Where a background server lives: one per store and answer-shaping settings, named by a hash of them, as a
socket, a status file, a start lock and a log in a private (0700) folder under the cache folder."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rag.config import ConfigError, Settings

FOLDER = "daemons"
# Settings that do not change an answer: a change of these reuses the warm server. Everything else (store,
# model, n_ctx, k, retrieval, temperature...) names a server of its own.
NOT_ANSWERING = {"keep_alive", "api_key", "upload_dir", "max_upload_mb", "password", "ocr", "pdf_tables",
                 "embedding_batch_size"}
# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


class DaemonError(ConfigError):
    """A background server that cannot be used; shown as one line, like any error the user can act on."""


class DaemonGone(DaemonError):
    """The server's socket refused the question before anything was asked (it exited after keep_alive)."""


def daemon_settings(settings: Settings) -> Settings:
    """The settings a server gets: paths made absolute (it runs from /), no API key (the socket's permissions
    are the access control)."""
    model = settings.model
    if Path(model).expanduser().is_file():
        model = str(Path(model).expanduser().resolve())
    absolute = {name: Path(value).expanduser().resolve() for name in ("store", "cache_dir", "models_dir", "upload_dir")
                if (value := getattr(settings, name)) is not None}
    return Settings.model_validate({**settings.model_dump(), **absolute, "model": model, "api_key": None})


def settings_key(settings: Settings) -> str:
    """16 hex digits naming the server for these settings (already made absolute by `daemon_settings`)."""
    shaping = {k: v for k, v in settings.model_dump(mode="json").items() if k not in NOT_ANSWERING}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def private_folder(cache_dir: Path) -> Path:
    """<cache_dir>/daemons, created 0700 and refused when it belongs to someone else or others may enter it."""
    folder = Path(cache_dir) / FOLDER
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid():
        raise DaemonError(f"{folder}: belongs to another user; remove it or choose another cache_dir")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)  # made by an older rag or by hand: the sockets in it must be ours alone
    return folder


@dataclass(frozen=True)
class DaemonPaths:
    """The files of one background server."""

    folder: Path
    key: str

    @classmethod
    def for_settings(cls, settings: Settings) -> DaemonPaths:
        paths = cls(private_folder(settings.cache_dir), settings_key(settings))
        if len(os.fsencode(paths.socket)) > MAX_SOCKET_PATH:
            raise DaemonError(f"{paths.socket}: path too long for a Unix socket ({MAX_SOCKET_PATH} bytes at most); "
                              "set a shorter cache_dir")
        return paths

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def status(self) -> Path:
        """JSON written by the server when it is up: pid, socket, store, model, started."""
        return self.folder / f"{self.key}.json"

    @property
    def lock(self) -> Path:
        """Held while a client looks for the server and starts it, so two clients never start two."""
        return self.folder / f"{self.key}.lock"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"


def known(cache_dir: Path) -> list[DaemonPaths]:
    """Every server that wrote a status file under `cache_dir` (running, or died without cleaning up)."""
    folder = Path(cache_dir) / FOLDER
    if not folder.is_dir():
        return []
    return [DaemonPaths(folder, p.stem) for p in sorted(folder.glob("*.json"))]
