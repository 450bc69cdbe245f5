"""rag.config: the corners of the settings layers and of write_setting that mutation testing found untested
(the cache folder, the process environment, empty variables, [store] and [rag] tables, RAG_CHROMA_URL forms,
a settings file written into a new folder or left whole by a failed write)."""

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
