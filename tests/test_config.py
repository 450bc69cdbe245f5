from pathlib import Path

import pytest

from rag.config import ConfigError, Settings


def test_layers_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text('k = 7\nmodel = "from-file"\ntemperature = 0.5\n')
    env = {"RAG_MODEL": "from-env", "RAG_TEMPERATURE": "0.3"}
    s = Settings.load(config_file=cfg, env=env, overrides={"temperature": 0.9, "store": None})
    assert s.k == 7  # file beats default
    assert s.model == "from-env"  # env beats file
    assert s.temperature == 0.9  # flag beats env
    assert s.store == Path("vectorstore")  # a None flag does not hide the default
    assert Settings.load(config_file=None, env={}).k == 4


def test_rag_table_and_env_store(tmp_path):
    cfg = tmp_path / "custom.toml"
    cfg.write_text("[rag]\nchunk_size = 120\n")
    s = Settings.load(env={"RAG_CONFIG": str(cfg), "RAG_STORE": str(tmp_path / "s")})
    assert s.chunk_size == 120
    assert s.store == tmp_path / "s"


def test_chroma_url(tmp_path):
    s = Settings.load(config_file=None, env={"RAG_CHROMA_URL": "http://db.local:9000"})
    assert (s.chroma_host, s.chroma_port) == ("db.local", 9000)


@pytest.mark.parametrize(
    "content, message",
    [("k = [", "not valid TOML"), ("k = 0", "setting 'k'"), ("nonsense = 1", "setting 'nonsense'")],
)
def test_bad_config_is_one_line(tmp_path, content, message):
    cfg = tmp_path / "rag.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as err:
        Settings.load(config_file=cfg, env={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.load(config_file=tmp_path / "nope.toml", env={})


def test_every_setting_is_documented():
    for name, _value, description in Settings().describe():
        assert description, name


def test_store_table_names_a_chroma_server(tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text('[store]\npath = "manifest-here"\nhost = "10.0.0.5"\nport = 8123\n')
    s = Settings.load(config_file=cfg, env={})
    assert (s.store, s.chroma_host, s.chroma_port) == (Path("manifest-here"), "10.0.0.5", 8123)
    cfg.write_text('[store]\nhots = "typo"\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[store\]: hots"):
        Settings.load(config_file=cfg, env={})


def test_write_setting_keeps_the_users_file(tmp_path):
    from rag.config import write_setting

    cfg = tmp_path / "rag.toml"
    cfg.write_text('# mine\nmodel = "old"  # the small one\nk = 6\n\n[store]\npath = "s"\n')
    cfg.chmod(0o600)  # it may hold api keys
    write_setting(cfg, "model", "new")
    write_setting(cfg, "n_ctx", 2048)
    assert cfg.read_text() == '# mine\nmodel = "new"  # the small one\nk = 6\nn_ctx = 2048\n\n[store]\npath = "s"\n'
    assert cfg.stat().st_mode & 0o777 == 0o600
    assert Settings.load(config_file=cfg, env={}).n_ctx == 2048


def test_write_setting_refuses_a_broken_file_in_one_line(tmp_path):
    from rag.config import write_setting

    cfg = tmp_path / "rag.toml"
    cfg.write_text("k = [\n")
    with pytest.raises(ConfigError) as err:
        write_setting(cfg, "model", "x")
    assert str(err.value).startswith(f"{cfg}: not valid TOML (") and "\n" not in str(err.value)
    assert cfg.read_text() == "k = [\n" and [p.name for p in tmp_path.iterdir()] == ["rag.toml"]


def test_models_folder(tmp_path):
    from rag.config import models_folder

    assert models_folder(tmp_path / "cache") == tmp_path / "cache" / "models"
    assert models_folder(tmp_path / "cache", tmp_path / "mine") == tmp_path / "mine"
    assert models_folder(Path("~/c")) == Path.home() / "c" / "models"
