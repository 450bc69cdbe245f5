from click.testing import CliRunner

from rag.cli import main
from tests.conftest import rag_with


def test_doctor_reports_a_healthy_install_and_a_half_done_store(tmp_path, embeddings, data_copy):
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--store", str(tmp_path / "none")])
    assert "[ok  ] llama.cpp:" in result.output and "AVX" in result.output
    assert "[ok  ] embeddings: all-MiniLM-L6-v2" in result.output
    assert "[ok  ] privacy: ORT_DISABLE_TELEMETRY=1" in result.output
    assert "[warn] store:" in result.output and "fix: rag ingest PATH" in result.output
    assert result.exit_code == 0
    rag = rag_with(tmp_path / "store", embeddings)
    rag.ingest(data_copy / "pypdf-encryption-decryption.md")
    rag.store.manifest.set_status(str(data_copy / "pypdf-encryption-decryption.md"), "pending")
    result = runner.invoke(main, ["doctor", "--store", str(tmp_path / "store")])
    assert "half-replaced by an interrupted ingest" in result.output


def test_doctor_fails_on_a_missing_model(tmp_path):
    result = CliRunner().invoke(main, ["doctor", "--store", str(tmp_path)], env={"RAG_MODEL": str(tmp_path / "x.gguf")})
    assert result.exit_code == 1
    assert "[FAIL] chat model:" in result.output and "fix:" in result.output
