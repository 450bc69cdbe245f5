"""rag.config: the corners of the settings layers and of write_setting that mutation testing found untested
(the defaults and bounds, the cache folder, the process environment, empty variables, [store] and [rag] tables,
RAG_CHROMA_URL forms, a settings file written into a new folder or left whole by a failed write)."""

from pathlib import Path

import pytest

from rag.config import ConfigError, Settings, write_setting


def test_cache_dir_follows_xdg_cache_home_else_home(tmp_path, monkeypatch):
    assert Settings.load(config_file=None, env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}).cache_dir == tmp_path / "xdg" / "rag"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings.load(config_file=None, env={}).cache_dir == tmp_path / "home" / ".cache" / "rag"
    assert Settings.load(config_file=None, env={"XDG_CACHE_HOME": ""}).cache_dir == tmp_path / "home" / ".cache" / "rag"


def test_without_env_the_process_environment_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./rag.toml
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    monkeypatch.setenv("RAG_K", "9")
    assert Settings.load().k == 9


def test_an_empty_variable_is_unset():
    assert Settings.load(config_file=None, env={"RAG_K": "", "RAG_MODEL": ""}).k == 4


def test_store_as_a_plain_key_and_collection_in_the_store_table(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text('store = "here"\n')
    assert Settings.load(config_file=cfg, env={}).store == Path("here")
    cfg.write_text('[store]\ncollection = "mine"\n')
    assert Settings.load(config_file=cfg, env={}).collection == "mine"
    cfg.write_text('[store]\nprot = 1\nhots = "typo"\n')
    with pytest.raises(ConfigError) as err:
        Settings.load(config_file=cfg, env={})
    assert str(err.value) == f"{cfg}: unknown key(s) in [store]: hots, prot (known: path, host, port, collection)"


@pytest.mark.parametrize(
    "url, host, port",
    [("db.local:9000", "db.local", 9000), ("http://db.local", "db.local", 8000), ("https://10.1.2.3:8443/", "10.1.2.3", 8443)],
)
def test_chroma_url_forms(url, host, port):
    s = Settings.load(config_file=None, env={"RAG_CHROMA_URL": url})
    assert (s.chroma_host, s.chroma_port) == (host, port)


def test_chroma_url_without_a_host_is_one_line():
    with pytest.raises(ConfigError) as err:
        Settings.load(config_file=None, env={"RAG_CHROMA_URL": "http://:9000"})
    assert str(err.value) == "RAG_CHROMA_URL='http://:9000': expected host:port or http://host:port"


def test_write_setting_creates_the_file_and_its_folders(tmp_path):
    cfg = tmp_path / "config" / "rag" / "rag.toml"
    write_setting(cfg, "model", "smollm2-135m")
    assert cfg.read_text() == 'model = "smollm2-135m"\n'
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["rag.toml"]


def test_write_setting_goes_into_the_rag_table(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text("[rag]\nk = 3\n")
    write_setting(cfg, "model", "x")
    assert cfg.read_text() == '[rag]\nk = 3\nmodel = "x"\n'
    s = Settings.load(config_file=cfg, env={})
    assert (s.k, s.model) == (3, "x")


def test_write_setting_on_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        write_setting(tmp_path, "model", "x")  # a folder, not a file
    assert str(err.value).startswith(f"{tmp_path}: cannot read (") and "\n" not in str(err.value)


def test_a_failed_write_leaves_the_file_whole_and_no_temporary_file(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text('model = "old"\n')
    with pytest.raises(UnicodeEncodeError):
        write_setting(cfg, "model", "\ud800")  # a lone surrogate cannot be written as UTF-8
    assert cfg.read_text() == 'model = "old"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rag.toml"]


DEFAULTS = {
    "store": Path("vectorstore"), "collection": "documents", "chroma_host": None, "chroma_port": 8000,
    "embedding_model": "auto", "embedding_batch_size": 32, "embedding_backend": "auto",
    "model": "qwen2.5-coder-1.5b", "models_dir": None, "memory_check": True, "n_ctx": 4096, "n_threads": None,
    "n_batch": 512, "n_gpu_layers": 0, "temperature": 0.0, "max_tokens": 512, "seed": 42, "llm_url": None,
    "chunk_size": 200, "chunk_overlap": 30, "k": 4, "retrieval": "hybrid", "min_score": 0.3, "mmr": False,
    "ocr": "auto", "api_key": None, "upload_dir": None, "max_upload_mb": 50,
}


def test_defaults():
    s = Settings.load(config_file=None, env={})
    assert {name: getattr(s, name) for name in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize(
    "name, lowest, too_low",
    [("embedding_batch_size", 1, 0), ("n_ctx", 256, 255), ("n_batch", 1, 0), ("temperature", 0.0, -0.1),
     ("max_tokens", 1, 0), ("chunk_size", 16, 15), ("chunk_overlap", 0, -1), ("k", 1, 0), ("max_upload_mb", 1, 0)],
)
def test_lower_bounds(name, lowest, too_low):
    assert getattr(Settings.load(config_file=None, env={}, overrides={name: lowest}), name) == lowest
    with pytest.raises(ConfigError, match=f"^setting '{name}': "):
        Settings.load(config_file=None, env={}, overrides={name: too_low})


def test_temperature_at_most_2():
    assert Settings.load(config_file=None, env={}, overrides={"temperature": 2.0}).temperature == 2.0
    with pytest.raises(ConfigError, match="^setting 'temperature': "):
        Settings.load(config_file=None, env={}, overrides={"temperature": 2.1})


def test_assignments_are_validated():
    from pydantic import ValidationError

    s = Settings()
    with pytest.raises(ValidationError):
        s.k = 0
    assert s.k == 4


def test_rag_toml_in_the_working_folder_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("k = 11\n")
    assert Settings.load(env={}).k == 11
