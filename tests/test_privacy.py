"""Nothing leaves the machine, checked at the operating-system level: the real `rag` commands (ingest, ask, chat,
serve, and ask through the background server it starts) run under strace, and every connect/sendto and every file
written is inspected (no patching of Python's socket)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import CRAN_FACT, DATA

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace not installed (apt-get install strace)")

SYSCALLS = "connect,sendto,sendmsg,openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2"
_NET = re.compile(r"^\d+\s+(connect|sendto|sendmsg)\((.*)$")
_INET = re.compile(r'sa_family=AF_INET6?, .*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')
_WRITE = re.compile(r'^\d+\s+(openat|open|creat|mkdir|mkdirat|rename|renameat2?)\((?:AT_FDCWD, )?"([^"]+)"(.*)$')


def traced(args: list[str], env: dict, log: Path, stdin: str | None = None, syscalls: str = SYSCALLS) -> subprocess.CompletedProcess:
    cmd = [STRACE, "-f", "-qq", "-e", f"trace={syscalls}", "-o", str(log), str(Path(sys.executable).with_name("rag")), *args]
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


def private_env(root: Path) -> tuple[dict, list[str], Path]:
    """The environment of a traced run: an empty home (its cache folder) and temp folder under `root`, none of the
    caller's RAG_*/telemetry variables; the folders it may write to; the store's path."""
    home, tmp, store = root / "home", root / "tmp", root / "store"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "HF_", "ORT_", "LANGCHAIN", "LANGSMITH"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    return env, [str(store), str(home / ".cache"), str(tmp), os.path.realpath(tmp), "/dev/", "/proc/self/"], store


def test_ingest_ask_and_chat_stay_on_the_machine(tmp_path):
    env, allowed, store = private_env(tmp_path)
    home = tmp_path / "home"
    env["RAG_KEEP_ALIVE"] = "0"  # in process: the background server has a case of its own below
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
    # serve: the default address, one question over loopback, then Ctrl-C.
    log = tmp_path / "serve.strace"
    served = traced_serve(["serve", "--port", "0", "--store", str(store), "--model", "smollm2-135m", "--max-tokens", "32"], env, log)
    assert served["returncode"] == 130, ("serve", served["stderr"][-2000:])  # 130: stopped by Ctrl-C, as documented
    assert CRAN_FACT in served["answer"]["choices"][0]["message"]["content"], served["answer"]  # its first answer
    assert {Path(s["source"]).name for s in served["answer"]["sources"]} == {"R-FAQ.pdf"}, served["answer"]
    text = log.read_text(errors="replace")
    assert "openat(" in text
    binds = network_binds(text)
    # The server listens on 127.0.0.1, and nothing binds a non-loopback address (urllib3 probes IPv6 with ::1).
    assert "127.0.0.1" in binds and set(binds) <= {"127.0.0.1", "::1"}, binds
    assert outside_connections(log) == [], "serve"
    assert writes_outside(log, allowed) == [], "serve"
    assert (store / "manifest.sqlite3").is_file()
    assert not (home / ".cache" / "Microsoft").exists()  # onnxruntime's telemetry queue


def network_binds(trace: str) -> list[str]:
    """The IPv4/IPv6 addresses a trace's processes bound a socket to."""
    pattern = r'bind\(\d+, \{sa_family=AF_INET6?, .*?inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"'
    return [m.group(1) for m in re.finditer(pattern, trace)]


def traced_serve(args: list[str], env: dict, log: Path) -> dict:
    """`rag serve` under strace: wait for its address, ask one question over loopback, stop it with SIGINT."""
    import json
    import signal
    import urllib.request

    cmd = [STRACE, "-f", "-qq", "-e", f"trace={SYSCALLS},bind", "-o", str(log), str(Path(sys.executable).with_name("rag")), *args]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    answer: dict = {}
    try:
        line = ""
        while "rag serve:" not in line and proc.poll() is None:
            line = proc.stderr.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert url, line
        body = json.dumps({"model": "rag", "messages": [{"role": "user", "content": "What is CRAN?"}]}).encode()
        request = urllib.request.Request(url.group(1) + "/v1/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=900) as resp:
            answer = json.loads(resp.read())
    finally:
        stop_traced(proc, signal.SIGINT, proc.kill)
    return {"returncode": proc.returncode, "stderr": proc.stderr.read(), "answer": answer}


def test_the_background_server_stays_on_the_machine():
    """A `rag ask` that starts the background server and a second one that reuses it, each under strace -f: the
    server is the first one's child, so its whole life (loading, listening, answering both) is in the first trace,
    which ends when `rag stop` has stopped it."""
    root = Path(tempfile.mkdtemp(prefix="ragp-"))  # short: the server's Unix socket lives under its cache folder
    try:
        env, allowed, store = private_env(root)
        logs = [root / "first.strace", root / "second.strace"]
        server = traced_daemon(env, store, logs)
        traces = [log.read_text(errors="replace") for log in logs]
        sock = re.escape(f'{{sa_family=AF_UNIX, sun_path="{server["socket"]}"')
        # The first trace holds the server (it bound the socket), the second one's client connected to it; nothing
        # bound a network address but loopback (urllib3's IPv6 probe binds ::1).
        assert re.search(rf"bind\(\d+, {sock}", traces[0]), traces[0][-2000:]
        assert re.search(rf"connect\(\d+, {sock}", traces[1]), traces[1][-2000:]
        assert set(network_binds(traces[0] + traces[1])) <= {"127.0.0.1", "::1"}, network_binds(traces[0] + traces[1])
        for name, log in zip(("first", "second"), logs):
            assert "openat(" in log.read_text(errors="replace")
            assert outside_connections(log) == [], name
            assert writes_outside(log, allowed) == [], name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def traced_daemon(env: dict, store: Path, logs: list[Path]) -> dict:
    """Ingest data/ (untraced), then `rag ask` twice, each under strace -f into its log: the first starts the
    background server, the second reuses it; `rag stop` ends it, and with it the first trace. Returns the server
    as `rag ps` saw it after the second answer."""
    import json

    from rag.daemon.lifecycle import running

    rag_exe = str(Path(sys.executable).with_name("rag"))
    ask = ["ask", "What is CRAN?", "--store", str(store), "--model", "smollm2-135m", "--max-tokens", "32", "--json"]
    strace = [STRACE, "-f", "-qq", "-e", f"trace={SYSCALLS},bind", "-o"]
    subprocess.run([rag_exe, "ingest", str(DATA), "--store", str(store), "-q"], env=env, check=True, timeout=900,
                   capture_output=True)
    first = subprocess.Popen([*strace, str(logs[0]), rag_exe, *ask], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = first.stdout.readline()  # the client's answer; strace goes on until the server it started exits
        assert line.startswith("{"), line
        answer = json.loads(line)
        assert CRAN_FACT in answer["answer"], answer  # the server's first prompt
        second = subprocess.run([*strace, str(logs[1]), rag_exe, *ask], env=env, capture_output=True, text=True,
                                timeout=900)
        assert second.returncode == 0, second.stderr[-2000:]
        assert {Path(s["source"]).name for s in json.loads(second.stdout)["sources"]} == {"R-FAQ.pdf"}, second.stdout
        (server,) = running(Path(env["XDG_CACHE_HOME"]) / "rag")
        assert (server["answered"], server["model_loads"]) == (2, 1), server  # the second one reused it
    finally:
        subprocess.run([rag_exe, "stop", "--all"], env=env, capture_output=True, timeout=300)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert first.returncode == 0, first.stderr.read()[-2000:]  # strace's exit status is its command's, the client's
    return server


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


def test_ingest_on_a_ray_cluster_stays_on_the_machine():
    """A Ray head started as the README says (`ray start --head` with its variables and ~/ray_bootstrap_config.yaml)
    and `rag ingest --ray` against it, each under strace -f: no connection leaves the machine. Ray talks over the
    node's own routable address (it picks it even when told 127.0.0.1: ray #26293), so this machine's addresses
    (`hostname -I`) count as local; the cloud metadata (169.254.169.254, metadata.google.internal) and Ray's usage
    server are not."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'rag[ray]')")
    root = Path(tempfile.mkdtemp(prefix="ragr-"))  # short: Ray's Unix sockets live under its temp folder
    try:
        env, _allowed, store = private_env(root)
        (root / "home" / "ray_bootstrap_config.yaml").write_text("{}\n")
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_USAGE_STATS_REPORT_URL="http://127.0.0.1:9/",
                   RAY_agent_register_timeout_ms="180000")  # the agents start slowly under strace
        own = set(subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split())
        own |= {f"::ffff:{a}" for a in own if ":" not in a}  # the same, as IPv4-mapped IPv6 addresses
        head_log, ingest_log = root / "head.strace", root / "ingest.strace"
        port = str(_free_port())
        ray_exe = str(Path(sys.executable).with_name("ray"))
        head = subprocess.Popen([STRACE, "-f", "-qq", "-e", f"trace={SYSCALLS},socket", "-o", str(head_log), ray_exe, "start",
                                 "--head", "--port", port, "--num-cpus", "1", "--include-dashboard=false",
                                 "--disable-usage-stats", "--temp-dir", str(root / "ray"), "--block",
                                 # chosen here: with 0 the raylet gives its agents 15 s to report theirs
                                 *(f"--{name}={_free_port()}" for name in ("dashboard-agent-grpc-port",
                                   "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port"))],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            seen = ""
            while "Ray runtime started" not in seen and head.poll() is None:
                seen += head.stdout.readline()
            assert "Ray runtime started" in seen, seen[-2000:]
            docs = root / "docs"
            docs.mkdir()
            for md in DATA.glob("*.md"):
                shutil.copy2(md, docs / md.name)
            ingest = traced(["ingest", str(docs), "--store", str(store), "--ray", f"127.0.0.1:{port}", "-q",
                             "--ocr", "never"], env, ingest_log, syscalls=f"{SYSCALLS},socket")
            assert ingest.returncode == 0, ingest.stderr[-2000:]
            assert ingest.stdout.startswith("1 files: 1 ingested, 0 unchanged, 0 skipped, 0 failed; 1 pages, "), ingest.stdout
        finally:
            # `ray start --block` stops the processes it started on SIGTERM; else this test's session goes.
            stop_traced(head, signal.SIGTERM, lambda: os.killpg(head.pid, signal.SIGKILL))
        for log in (head_log, ingest_log):
            text = log.read_text(errors="replace")
            assert "connect(" in text  # the trace really recorded the run's connections
            probes = route_probes(log)
            bad = [line for line in outside_connections(log)
                   if not any(f'"{a}"' in line for a in own) and line not in probes]
            assert bad == [], (log.name, bad[:5])
    finally:
        shutil.rmtree(root, ignore_errors=True)


_SOCKET = re.compile(r"^(\d+)\s+socket\(AF_INET6?, (SOCK_[A-Z]+).*\) = (\d+)$")
_PROBE = re.compile(r'^(\d+)\s+connect\((\d+), \{sa_family=AF_INET6?, sin6?_port=htons\(53\), .*"(8\.8\.8\.8|2001:4860:4860::8888)"')


def route_probes(log: Path) -> list[str]:
    """Ray's way to learn the node's routable address (in every `ray start` and `ray.init`, whatever the flags):
    connect() a UDP socket to 8.8.8.8:53 and read the socket's own address. A UDP connect sends no packet (the
    kernel only picks a route); these lines are those connects, on sockets the trace shows were made SOCK_DGRAM."""
    kinds: dict[tuple[str, str], str] = {}
    probes = []
    for line in log.read_text(errors="replace").splitlines():
        made = _SOCKET.match(line)
        if made:
            kinds[(made.group(1), made.group(3))] = made.group(2)
            continue
        probe = _PROBE.match(line)
        if probe and kinds.get((probe.group(1), probe.group(2))) == "SOCK_DGRAM":
            probes.append(line)
    return probes


def stop_traced(proc: subprocess.Popen, sig: int, last_resort) -> None:
    """Signal the traced command (strace's child: signalling strace would only detach it), wait for the trace to
    end; `last_resort()` if it has not within 120 s."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split() if proc.poll() is None else []
    for child in children:
        os.kill(int(child), sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        last_resort()
        proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
