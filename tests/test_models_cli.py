"""`rag models list / pull / use` and the model checks of rag/models/gguf.py, on real files: small GGUFs written
here with the `gguf` package, the packaged models, and a hub served from 127.0.0.1 by this test (no network)."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.models import gguf as gguf_info
from rag.models.packaged import QWEN_CODER_1_5B, ModelError
from rag.cli.models import models_group

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"


def write_gguf(path: Path, *, arch: str = "llama", context: int = 4096, template: bool = True, n_layer: int = 2,
               n_embd: int = 64, heads: int = 4, heads_kv: int = 2, vocab: int = 300, size_label: str | None = None) -> Path:
    """A few-KB GGUF: real header (architecture, context, attention shape, tokenizer list, chat template) and
    two tiny f32 tensors."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(path.stem)
    if size_label:
        writer.add_size_label(size_label)
    writer.add_context_length(context)
    writer.add_block_count(n_layer)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(2 * n_embd)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads_kv)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(vocab)])  # > 256 entries: the reader steps over it
    if template:
        writer.add_chat_template(TEMPLATE)
    writer.add_tensor("token_embd.weight", np.zeros((vocab, n_embd), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean working folder (no rag.toml) and no RAG_* / HF_* variables of the developer's."""
    import os

    for key in list(os.environ):
        if key.startswith("RAG_") or key in ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def models_dir(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    write_gguf(d / "tiny-chat.gguf", context=4096, template=True)
    write_gguf(d / "tiny-base.gguf", context=2048, template=False, size_label="1M")
    return d


def run(*args: str, obj: dict | None = None):
    return CliRunner().invoke(models_group, list(args), obj=obj, prog_name="rag models")


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    return err


# --- reading headers and list ---------------------------------------------------------------------------

def test_read_gguf_written_file(models_dir):
    info = gguf_info.read_gguf(models_dir / "tiny-chat.gguf")
    assert (info.architecture, info.context_length, info.chat_template) == ("llama", 4096, True)
    assert info.n_vocab == 300 and info.n_layer == 2 and info.n_head_kv == [2, 2] and info.head_dim_k == 16
    assert info.n_params == 300 * 64 + 64 and info.file_type == "F32"
    assert info.file_size == (models_dir / "tiny-chat.gguf").stat().st_size
    # KV cache = 2 (K, V) * n_layer * n_ctx * n_head_kv * head_dim * 2 bytes
    assert info.kv_cache_bytes(1024) == 2 * 2 * 1024 * 2 * 16 * 2
    # compute, n_batch 512: max(logits 300 * 512 * 4 = 614,400, scores 1024 * 512 * (4 heads + 1) * 4 = 10,485,760)
    # + activations 512 * (4 * 64 + 128) * 4 = 786,432 -> 11,272,192
    assert info.compute_bytes(1024) == 11_272_192
    # memory = the file + KV 262,144 + compute 11,272,192 + runtime 150 MiB 157,286,400 = the file + 168,820,736
    assert info.memory_bytes(1024) - info.file_size == 168_820_736
    base = gguf_info.read_gguf(models_dir / "tiny-base.gguf")
    assert (base.chat_template, base.context_length, base.params_label) == (False, 2048, "1M")


def test_list_json(env, models_dir):
    result = run("list", "--json", "--models-dir", str(models_dir), "--n-ctx", "2048")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_ctx"] == 2048 and data["models_dir"] == str(models_dir)
    models = {m["name"]: m for m in data["models"]}
    assert list(models)[:2] == ["qwen2.5-coder-1.5b", "smollm2-135m"]
    chat, base = models["tiny-chat.gguf"], models["tiny-base.gguf"]
    assert (chat["architecture"], chat["context_length"], chat["chat_template"]) == ("llama", 4096, True)
    assert (base["architecture"], base["context_length"], base["chat_template"]) == ("llama", 2048, False)
    assert chat["file_size"] == (models_dir / "tiny-chat.gguf").stat().st_size
    assert chat["memory_bytes"] > chat["file_size"] + chat["kv_cache_bytes"] > chat["file_size"]
    assert models["qwen2.5-coder-1.5b"]["default"] is True and chat["default"] is False


def test_list_packaged_models(env):
    result = run("list", "--json", "--models-dir", str(env / "none"))
    assert result.exit_code == 0, result.output
    models = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    qwen, smol = models["qwen2.5-coder-1.5b"], models["smollm2-135m"]
    assert (qwen["architecture"], qwen["context_length"], qwen["chat_template"], qwen["params"]) == ("qwen2", 32768, True, "1.5B")
    assert qwen["file_size"] == QWEN_CODER_1_5B.size and qwen["file_type"] == "Q4_K_M"
    assert (smol["architecture"], smol["context_length"], smol["chat_template"], smol["params"]) == ("llama", 8192, True, "135M")
    assert smol["file_type"] == "Q4_1" and 90e6 < smol["file_size"] < 110e6


def test_list_packaged_before_join_reads_part_one(env, tmp_path, monkeypatch):
    """With an empty cache the 1.5B model is not joined yet: its header comes from part 1 of the packages."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "empty-cache"))
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    qwen = {m["name"]: m for m in json.loads(result.stdout)["models"]}["qwen2.5-coder-1.5b"]
    assert "22 parts" in qwen["source"] and qwen["error"] is None
    assert (qwen["architecture"], qwen["context_length"], qwen["file_size"]) == ("qwen2", 32768, QWEN_CODER_1_5B.size)
    assert not (tmp_path / "empty-cache" / "models").exists()  # listing joined nothing


def test_list_table(env, models_dir):
    (models_dir / "old.ggmlv3.q4_0.bin").write_bytes(b"tjgg" + bytes(64))
    result = run("list", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"^\s+NAME\s+SIZE\s+ARCH\s+PARAMS\s+QUANT\s+CONTEXT\s+CHAT\s+MEMORY@4096", out, re.M)
    assert re.search(r"^\*\s+qwen2\.5-coder-1\.5b\s+1\.12 GB\s+qwen2\s+1\.5B\s+Q4_K_M\s+32,768\s+yes", out, re.M)
    assert re.search(r"tiny-base\.gguf .* llama .* 2,048\s+no \(base\)", out)
    assert re.search(r"tiny-chat\.gguf .* llama .* 4,096\s+yes", out)
    assert "old.ggmlv3.q4_0.bin: " in out and "GGML" in out  # listed under problems, not a traceback


def test_list_split_model_once(env, tmp_path):
    """A gguf-split model (name-00001-of-00002.gguf, ...) is one row: shard 1, with the size of all shards."""
    import gguf
    import numpy as np

    folder = tmp_path / "split"
    folder.mkdir()
    writer = gguf.GGUFWriter(folder / "m.gguf", "llama", split_max_tensors=1)
    writer.add_context_length(1024)
    writer.add_chat_template(TEMPLATE)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shards = sorted(folder.iterdir())
    assert [p.name for p in shards] == ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"]
    result = run("list", "--json", "--models-dir", str(folder))
    rows = [m for m in json.loads(result.stdout)["models"] if m["source"] == "models folder"]
    assert [m["name"] for m in rows] == ["m-00001-of-00002.gguf"]
    assert rows[0]["file_size"] == sum(p.stat().st_size for p in shards) and rows[0]["n_params"] == 2 * 16 * 8


def test_header_reader_does_not_load_weights():
    """Part 1 of the 1.5B model: 52 MB, of which the header (vocabulary and merges, 151,936 entries each) is
    about 6 MB and the rest weights. Read in a fresh process, whose peak memory says what it touched: the
    header's pages and a few MB of Python, not the 46 MB of weights (nor gguf's GGUFReader's 500 MB of views)."""
    code = """if True:
        import resource
        from pathlib import Path
        import gguf  # the package, and numpy with it, loaded before the measure
        from rag.models.gguf import packaged_info
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        info = packaged_info("qwen2.5-coder-1.5b", Path("/nonexistent"))
        print(info.n_vocab, info.n_layer, info.n_params, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [int(v) for v in out[:3]] == [151936, 28, 1_777_088_000]
    assert int(out[3]) < 25_000  # KB


def test_cli_module_imports_nothing_heavy():
    code = "import sys, rag.cli.models; print(sorted(m for m in ('gguf', 'numpy', 'huggingface_hub', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- use --------------------------------------------------------------------------------------------------

def test_use_writes_config_and_keeps_other_settings(env, models_dir):
    config = env / "rag.toml"
    config.write_text('# my settings\nstore = "/data/rag-store"\nk = 6\n\nn_ctx = 2048  # small machine\n')
    result = run("use", "tiny-chat.gguf", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    text = config.read_text()
    data = tomllib.loads(text)
    assert data == {"store": "/data/rag-store", "k": 6, "n_ctx": 2048, "model": str(models_dir / "tiny-chat.gguf")}
    assert text.startswith("# my settings\n") and "# small machine" in text

    from rag.config import Settings

    assert Settings.load().model == str(models_dir / "tiny-chat.gguf")
    result = run("use", "smollm2-135m")  # replaces the line, does not add a second one
    assert result.exit_code == 0, result.output
    assert tomllib.loads(config.read_text())["model"] == "smollm2-135m"
    assert config.read_text().count("model =") == 1

    listed = json.loads(run("list", "--json", "--models-dir", str(models_dir)).stdout)
    assert [m["name"] for m in listed["models"] if m["default"]] == ["smollm2-135m"]


def test_use_creates_config_and_writes_rag_table_of_config_file(env, models_dir, tmp_path):
    result = run("use", str(models_dir / "tiny-chat.gguf"))  # a path; no rag.toml yet
    assert result.exit_code == 0, result.output
    assert tomllib.loads((env / "rag.toml").read_text()) == {"model": str(models_dir / "tiny-chat.gguf")}

    other = tmp_path / "other.toml"
    other.write_text('[rag]\nk = 3\n')
    result = run("use", "tiny-chat", "--models-dir", str(models_dir), obj={"config": other})  # rag --config other.toml
    assert result.exit_code == 0, result.output
    assert tomllib.loads(other.read_text()) == {"rag": {"k": 3, "model": str(models_dir / "tiny-chat.gguf")}}


def test_use_unknown_model(env, models_dir):
    err = one_line_error(run("use", "nope.gguf", "--models-dir", str(models_dir)))
    assert "not a packaged model" in err and not (env / "rag.toml").exists()


# --- refusals and warnings --------------------------------------------------------------------------------

def test_ggml_file_refused(env, tmp_path):
    old = tmp_path / "llama-2-13b-chat.ggmlv3.q4_0.bin"
    old.write_bytes(b"tjgg" + bytes(1024))
    err = one_line_error(run("use", str(old)))
    assert "old GGML file" in err and "only GGUF" in err
    assert 'search the Hugging Face hub for "llama-2-13b-chat GGUF"' in err and "TheBloke" in err
    assert not (env / "rag.toml").exists()
    with pytest.raises(ModelError, match="GGML"):
        gguf_info.check_model(old, n_ctx=4096)


def test_gptq_folder_refused(env, tmp_path):
    folder = tmp_path / "Llama-2-13B-chat-GPTQ"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-2-13b-chat-hf",
                                                    "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    (folder / "quantize_config.json").write_text(json.dumps({"bits": 4, "group_size": 128}))
    (folder / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    err = one_line_error(run("use", str(folder)))
    assert "GPTQ" in err and "GPU runtimes" in err and "llama.cpp" in err and "Llama-2-13b-chat GGUF" in err


def test_safetensors_folder_and_file_refused(env, tmp_path):
    folder = tmp_path / "some-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    err = one_line_error(run("use", str(folder)))
    assert "safetensors" in err and "GPU runtimes" in err
    err = one_line_error(run("use", str(folder / "model.safetensors")))
    assert "safetensors" in err and "only GGUF" in err


def test_too_large_refused_unless_forced(models_dir):
    path = models_dir / "tiny-chat.gguf"
    with pytest.raises(ModelError) as caught:
        gguf_info.check_model(path, n_ctx=4096, available=10_000_000)
    message = str(caught.value)
    # At n_ctx 4096: KV 2 * 2 layers * 4096 * 2 heads * 16 * 2 bytes = 1,048,576 ("1 MB"); compute
    # max(300 * 512 * 4, 4096 * 512 * (4 + 1) * 4 = 41,943,040) + 786,432 = 42,729,472, + runtime 157,286,400
    # = 200,015,872 ("200 MB"); with the ~81 KB file about 201.15 MB in all ("201 MB").
    assert "needs about 201 MB of memory at n_ctx 4096" in message
    assert "KV cache 1 MB + compute and runtime 200 MB" in message
    assert "only 10 MB is available" in message and "--force" in message
    warnings = gguf_info.check_model(path, n_ctx=4096, force=True, available=10_000_000)
    assert len(warnings) == 1 and "loading anyway" in warnings[0]
    assert gguf_info.check_model(path, n_ctx=4096, available=10**12) == []


def test_too_large_through_cli(env, models_dir):
    """A tiny file whose header describes a huge model: its KV cache alone (4000 layers) exceeds any machine."""
    write_gguf(models_dir / "huge.gguf", n_layer=4000, n_embd=4096, heads=32, heads_kv=32, vocab=300)
    err = one_line_error(run("use", "huge.gguf", "--models-dir", str(models_dir)))
    assert "needs about" in err and "is available" in err and not (env / "rag.toml").exists()
    result = run("use", "huge.gguf", "--models-dir", str(models_dir), "--force")
    assert result.exit_code == 0, result.output
    assert "loading anyway" in result.stderr and (env / "rag.toml").exists()


def test_base_model_warning(env, models_dir):
    result = run("use", "tiny-base.gguf", "--models-dir", str(models_dir))
    assert result.exit_code == 0, result.output
    assert "warning: tiny-base.gguf: no chat template" in result.stderr
    warnings = gguf_info.check_model(models_dir / "tiny-base.gguf", n_ctx=4096, available=10**12)
    assert any("no chat template" in w for w in warnings) and any("longer than the model was trained" in w for w in warnings)
    assert gguf_info.check_model(models_dir / "tiny-chat.gguf", n_ctx=4096, available=10**12) == []


def test_not_gguf_and_truncated(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        gguf_info.read_gguf(junk)
    good = write_gguf(tmp_path / "good.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelError, match="truncated or damaged"):
        gguf_info.read_gguf(cut)


# --- pull, against a hub on 127.0.0.1 ---------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves files the way the Hugging Face hub does for LFS files:

    HEAD/GET {endpoint}/{repo}/resolve/{revision}/{file} -> 302 to a CDN (here http://localhost:PORT/blobs/<sha>,
    another host name than the endpoint's 127.0.0.1) with X-Repo-Commit, X-Linked-Etag (the file's sha256),
    X-Linked-Size and ETag; the CDN serves the bytes with Range support. Knobs: `drop_after` closes the first
    GET of a blob after that many bytes; `advertise` replaces the sha256 the hub announces."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.advertise: dict[tuple[str, str], str] = {}
        self.drop_after: int | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self.handle_any(body=False)

            def do_GET(self) -> None:
                self.handle_any(body=True)

            def handle_any(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.path)
                if m:
                    key = (m["repo"], m["file"])
                    if key not in hub.files:
                        return self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                    data = hub.files[key]
                    sha = hub.advertise.get(key) or hashlib.sha256(data).hexdigest()
                    return self.reply(302, {
                        "Location": f"http://localhost:{hub.port}/blobs/{hashlib.sha256(data).hexdigest()}",
                        "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                        "ETag": '"1111111111111111111111111111111111111111"'})
                m = re.fullmatch(r"/blobs/(?P<sha>[0-9a-f]{64})", self.path)
                data = next((d for d in hub.files.values() if hashlib.sha256(d).hexdigest() == m["sha"]), None) if m else None
                if data is None:
                    return self.reply(404, {})
                start, status = 0, 200
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if rng:
                    start, status = int(rng[1]), 206
                part = data[start:]
                headers = {"Accept-Ranges": "bytes", "Content-Length": str(len(part))}
                if status == 206:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not body:
                    return
                if hub.drop_after is not None and self.command == "GET":
                    self.wfile.write(part[:hub.drop_after])
                    self.wfile.flush()
                    hub.drop_after = None
                    self.close_connection = True  # the connection ends short of Content-Length
                    return
                self.wfile.write(part)

            def reply(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {**headers, "Content-Length": "0"}.items():
                    self.send_header(k, v)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def blob_gets(self) -> list[dict[str, str]]:
        return [h for method, path, h in self.requests if method == "GET" and path.startswith("/blobs/")]


@pytest.fixture
def hub(env, monkeypatch, tmp_path):
    server = FakeHub()
    server.thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file of the developer's
    yield server
    server.server.shutdown()
    server.server.server_close()


REPO, NAME = "TheBloke/Tiny-chat-GGUF", "tiny-chat.Q4_K_M.gguf"


@pytest.fixture
def served(hub, tmp_path) -> bytes:
    data = write_gguf(tmp_path / "served.gguf", vocab=2000).read_bytes()  # ~0.5 MB
    hub.files[(REPO, NAME)] = data
    return data


def test_pull_full(hub, served, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE  # True: `import rag` set HF_HUB_OFFLINE=1 first
    dest = tmp_path / "pulled"
    result = run("pull", REPO, NAME, "--models-dir", str(dest))
    assert result.exit_code == 0, result.output
    assert (dest / NAME).read_bytes() == served
    assert sorted(p.name for p in dest.iterdir()) == [NAME]  # no partial or lock file left
    assert "downloaded, sha256" in result.stdout and "verified" in result.stdout
    assert "llama" in result.stdout and "rag models use tiny-chat.Q4_K_M.gguf" in result.stdout
    heads = [h for method, path, h in hub.requests if method == "HEAD"]
    assert heads and heads[0].get("authorization") == "Bearer hf_test_token"  # the token goes to the hub ...
    assert "authorization" not in hub.blob_gets()[0]  # ... and not to the CDN
    assert huggingface_hub.constants.HF_HUB_OFFLINE is offline_before  # offline again after the pull

    again = run("pull", REPO, NAME, "--models-dir", str(dest))
    assert again.exit_code == 0 and "already there" in again.stdout and len(hub.blob_gets()) == 1

    listed = {m["name"]: m for m in json.loads(run("list", "--json", "--models-dir", str(dest)).stdout)["models"]}
    assert listed[NAME]["architecture"] == "llama" and listed[NAME]["chat_template"] is True


def test_pull_resumes_after_dropped_connection(hub, tmp_path):
    """The connection ends after 11 MB of 12: the download goes on from where it stopped (huggingface_hub's
    http_get writes in 10 MB chunks and resumes after the last whole one)."""
    data = write_gguf(tmp_path / "big.gguf", vocab=2000, n_embd=1536).read_bytes()
    assert len(data) > 12_000_000
    hub.files[(REPO, NAME)] = data
    hub.drop_after = 11 * 2**20
    dest = tmp_path / "pulled"
    result = run("pull", REPO, NAME, "--models-dir", str(dest), "--quiet")
    assert result.exit_code == 0, result.output
    assert (dest / NAME).read_bytes() == data
    gets = hub.blob_gets()
    assert len(gets) == 2 and "range" not in gets[0]
    start = int(re.fullmatch(r"bytes=(\d+)-", gets[1]["range"])[1])
    assert 0 < start <= 11 * 2**20


def test_pull_resumes_partial_file_of_earlier_run(hub, served, tmp_path):
    dest = tmp_path / "pulled"
    dest.mkdir()
    sha = hashlib.sha256(served).hexdigest()
    half = len(served) // 2
    (dest / f"{NAME}.{sha[:16]}.incomplete").write_bytes(served[:half])
    (dest / f"{NAME}.{'f' * 16}.incomplete").write_bytes(b"an older version")  # removed, never appended to
    result = run("pull", REPO, NAME, "--models-dir", str(dest))
    assert result.exit_code == 0, result.output
    assert (dest / NAME).read_bytes() == served
    assert sorted(p.name for p in dest.iterdir()) == [NAME]
    assert [g.get("range") for g in hub.blob_gets()] == [f"bytes={half}-"]
    assert "resumed at" in result.stdout


def test_pull_checksum_mismatch(hub, served, tmp_path):
    hub.advertise[(REPO, NAME)] = hashlib.sha256(b"something else").hexdigest()
    dest = tmp_path / "pulled"
    err = one_line_error(run("pull", REPO, NAME, "--models-dir", str(dest), "--quiet"))
    assert "checksum mismatch" in err and "deleted" in err
    assert list(dest.iterdir()) == []  # neither the file nor a partial one


def test_pull_missing_file_and_user_offline(hub, served, tmp_path, monkeypatch):
    err = one_line_error(run("pull", REPO, "nope.gguf", "--models-dir", str(tmp_path / "d"), "--quiet"))
    assert "has no file 'nope.gguf'" in err

    from rag import privacy as _privacy

    # The user's own HF_HUB_OFFLINE=1 (recorded by rag/_privacy.py before it forces its own) forbids the pull.
    monkeypatch.setattr(_privacy, "user_value", lambda key: "1" if key == "HF_HUB_OFFLINE" else None, raising=False)
    before = len(hub.requests)
    err = one_line_error(run("pull", REPO, NAME, "--models-dir", str(tmp_path / "d"), "--quiet"))
    assert "HF_HUB_OFFLINE=1" in err and len(hub.requests) == before


def test_pull_unreachable_hub(env, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    err = one_line_error(run("pull", REPO, NAME, "--models-dir", str(tmp_path / "d"), "--quiet"))
    assert REPO in err and f"cannot reach http://127.0.0.1:{port}" in err
