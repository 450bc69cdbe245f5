"""Finding, starting and stopping background servers: `connect` reuses the warm one for these settings or starts
it (detached, waiting for its ready line), `stop` ends one, `running` lists them for `rag ps`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.daemon.client import DaemonClient
from rag.daemon.paths import DaemonError, DaemonPaths, daemon_settings, known

class StartFailed(Exception):
    """The server could not start for a reason of its own (not the user's): the command answers in process."""


_STARTED: list[subprocess.Popen] = []  # our children: kept, so that Python does not warn about them at exit


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a second client waits here until the first has its server
        yield
    finally:
        os.close(fd)


def connect(settings: Settings, notice: Callable[[str], None]) -> DaemonClient | None:
    """A client of the warm server for `settings`, started when there is none (replacing a server of the same
    store with other settings). None, after one line to `notice`, when a server is there but does not answer."""
    settings = daemon_settings(settings)
    try:
        paths = DaemonPaths.for_settings(settings)
    except DaemonError as exc:
        notice(f"{exc}; answering in this process")
        return None
    with _locked(paths.lock):
        if paths.socket.exists():
            client = DaemonClient(paths)
            try:
                client.warnings = client.status().get("warnings", [])
                return client
            except DaemonError:
                client.close()
                pid = _pid(paths)
                dead = pid is None or not _is_daemon(pid)
                if dead:  # it died without cleaning up: the next command starts a fresh one
                    _forget(paths)
                notice(f"the background rag server ({paths.socket}) {'is gone' if dead else 'does not answer'}; "
                       "answering in this process")
                return None
        for other in known(paths.folder.parent):
            if other.key != paths.key and _status(other).get("store") == str(settings.store):
                stop(other)  # one warm server per store: the settings changed
        try:
            return DaemonClient(paths, spawn(paths, settings))
        except StartFailed as exc:
            notice(f"{exc}; answering in this process")
            return None


def spawn(paths: DaemonPaths, settings: Settings) -> list[str]:
    """Start the server for `settings` in a session of its own and wait for its ready line (its model is loaded
    and its socket listens); returns the model's warnings. DaemonError for the user's mistake it reports (an empty
    store, a model that does not fit), StartFailed when it failed otherwise."""
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "rag.daemon.main"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, cwd="/", start_new_session=True)
    finally:
        os.close(log)
    proc.stdin.write(json.dumps({"settings": settings.model_dump(mode="json"), "key": paths.key}).encode())
    proc.stdin.close()
    line = proc.stdout.readline()  # blocks until the server is ready, or has died (end of file)
    proc.stdout.close()
    try:
        message = json.loads(line)
    except ValueError:
        message = {"error": "it exited"}
    if "error" in message:
        proc.wait()
        if message.get("user"):
            raise DaemonError(message["error"])
        raise StartFailed(f"the background rag server could not start ({message['error']}; its log: {paths.log})")
    _STARTED.append(proc)
    return message.get("warnings", [])


def _status(paths: DaemonPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.status.read_text())
    except (OSError, ValueError):
        return {}


def _pid(paths: DaemonPaths) -> int | None:
    pid = _status(paths).get("pid")
    return pid if isinstance(pid, int) else None


def _is_daemon(pid: int) -> bool:
    """Whether `pid` is a live background server (not a zombie, not a recycled pid)."""
    try:
        return b"rag.daemon.main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for process `pid` to end (a pidfd becomes readable then); False when it is still there after `timeout`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _forget(paths: DaemonPaths) -> None:
    paths.socket.unlink(missing_ok=True)
    paths.status.unlink(missing_ok=True)


def stop(paths: DaemonPaths, timeout: float = 30) -> int | None:
    """End a server (SIGTERM: it finishes the answer it streams; SIGKILL after `timeout`); returns its pid."""
    pid = _pid(paths)
    if pid is not None and _is_daemon(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                wait_exit(pid, timeout)
    _forget(paths)
    return pid


def running(cache_dir: Path) -> list[dict[str, Any]]:
    """Every server under `cache_dir`, as its status file and its status endpoint describe it; `state` is
    "idle", "busy", "not answering" or "dead"."""
    rows = []
    for paths in known(cache_dir):
        info = {**_status(paths), "socket": str(paths.socket), "key": paths.key}
        client = DaemonClient(paths)
        try:
            info.update(client.status())
            info["state"] = "busy" if info.get("busy") or info.get("queued") else "idle"
        except DaemonError:
            info["state"] = "not answering" if _is_daemon(info.get("pid") or 0) else "dead"
        finally:
            client.close()
        rows.append(info)
    return rows
