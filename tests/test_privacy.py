"""Nothing leaves the machine, checked at the operating-system level: the real `rag` commands run under strace,
and every connect/sendto and every file written is inspected (no patching of Python's socket)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace not installed (apt-get install strace)")

SYSCALLS = "connect,sendto,sendmsg,openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2"
_NET = re.compile(r"^\d+\s+(connect|sendto|sendmsg)\((.*)$")
_INET = re.compile(r'sa_family=AF_INET6?, .*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')
_WRITE = re.compile(r'^\d+\s+(openat|open|creat|mkdir|mkdirat|rename|renameat2?)\((?:AT_FDCWD, )?"([^"]+)"(.*)$')


def traced(args: list[str], env: dict, log: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    cmd = [STRACE, "-f", "-qq", "-e", f"trace={SYSCALLS}", "-o", str(log), str(Path(sys.executable).with_name("rag")), *args]
    return subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=900)


def outside_connections(log: Path) -> list[str]:
    bad = []
    for line in log.read_text(errors="replace").splitlines():
        m = _NET.match(line)
        if not m:
            continue
        inet = _INET.search(m.group(2))
        if inet:
            addr = inet.group(1) or inet.group(2)
            if not (addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")):
                bad.append(line)
    return bad


def writes_outside(log: Path, allowed: list[str]) -> list[str]:
    bad = []
    for line in log.read_text(errors="replace").splitlines():
        m = _WRITE.match(line)
        if not m or "= -1" in m.group(3):
            continue
        call, path, rest = m.groups()
        writes = call not in ("openat", "open") or any(f in rest for f in ("O_WRONLY", "O_RDWR", "O_CREAT"))
        if writes and not any(os.path.realpath(path).startswith(a) or path.startswith(a) for a in allowed):
            bad.append(line)
    return bad


def test_ingest_ask_and_chat_stay_on_the_machine(tmp_path):
    home, tmp, store = tmp_path / "home", tmp_path / "tmp", tmp_path / "store"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "HF_", "ORT_", "LANGCHAIN", "LANGSMITH"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    allowed = [str(store), str(home / ".cache"), str(tmp), os.path.realpath(tmp), "/dev/", "/proc/self/"]
    runs = {
        "ingest": (["ingest", str(DATA), "--store", str(store), "-q"], None),
        "ask": (["ask", "What is CRAN?", "--store", str(store), "--model", "smollm2-135m", "--max-tokens", "32", "--json"], None),
        "chat": (["chat", "--store", str(store), "--model", "smollm2-135m", "--max-tokens", "32"], "What is CRAN?\nWho maintains it?\n/quit\n"),
    }
    for name, (args, stdin) in runs.items():
        log = tmp_path / f"{name}.strace"
        result = traced(args, env, log, stdin)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        text = log.read_text(errors="replace")
        assert "openat(" in text  # the trace really recorded the run
        assert outside_connections(log) == [], name
        assert writes_outside(log, allowed) == [], name
    assert (store / "manifest.sqlite3").is_file()
    assert not (home / ".cache" / "Microsoft").exists()  # onnxruntime's telemetry queue


def test_the_checks_can_fail(tmp_path):
    """The parsers flag a real outside connection and a real write outside the allowed folders."""
    log = tmp_path / "probe.strace"
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(0.5)\n"
        "try: s.connect(('192.0.2.1', 80))\n"
        "except OSError: pass\n"
        f"open({str(tmp_path / 'elsewhere.txt')!r}, 'w').write('x')\n"
    )
    subprocess.run([STRACE, "-f", "-qq", "-e", f"trace={SYSCALLS}", "-o", str(log), sys.executable, "-c", code], check=True, timeout=60)
    assert any("192.0.2.1" in line for line in outside_connections(log))
    assert any("elsewhere.txt" in line for line in writes_outside(log, [str(tmp_path / "allowed")]))
