"""The RAG_CI skip hook of tests/conftest.py, run by pytest inside pytest (pytester): in CI a skipped test fails
and names what is missing, except the allow-listed hardware-only tests, whose skips are listed with their reason."""

from pathlib import Path

import pytest

from tests.conftest import HARDWARE_SKIPS

REPO = Path(__file__).resolve().parents[1]

HOOKS = ("from tests.conftest import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport, "
         "pytest_terminal_summary\n")
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
SKIPS = """
import pytest

def test_needs_a_tool():
    pytest.skip("frobnicate not installed (apt-get install frobnicate)")

@pytest.mark.skipif(True, reason="the widget extra is not installed")
def test_marked():
    pass

@pytest.fixture
def corpus():
    pytest.skip("../corpus not present")

def test_with_fixture(corpus):
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass

def test_clears_the_environment_then_skips(monkeypatch):
    monkeypatch.delenv("RAG_CI", raising=False)  # as the CLI tests do with every RAG_* variable
    pytest.skip("gadget not installed")
"""
# A real allow-list entry: a file and a test of its names, skipping as it does on a CPU without the feature.
HARDWARE_FILE, HARDWARE_TEST = next(iter(HARDWARE_SKIPS)).split("::")
HARDWARE = f"""
import pytest

def {HARDWARE_TEST}():
    pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
"""


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    # The inner pytest runs in a subprocess (nothing of the outer session's state leaks in) and imports the
    # hooks from this repository's tests/conftest.py.
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(HOOKS)
    pytester.makeini(INI)
    pytester.makepyfile(test_skips=SKIPS, **{HARDWARE_FILE.removesuffix(".py"): HARDWARE})
    return pytester


def test_without_rag_ci_a_skip_is_a_skip(suite, monkeypatch):
    monkeypatch.delenv("RAG_CI", raising=False)
    result = suite.runpytest_subprocess("-ra", "-vv")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert "hardware-only skips" not in result.stdout.str()


def test_under_rag_ci_a_skip_fails_and_names_what_is_missing(suite, monkeypatch):
    monkeypatch.setenv("RAG_CI", "1")
    result = suite.runpytest_subprocess("-ra", "-vv")
    # The xfail stays an xfail, the hardware-only test stays a skip; the other four fail (a skip while setting
    # up, from a skipif mark or a fixture, is an error at setup).
    result.assert_outcomes(passed=1, failed=2, errors=2, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "ERROR test_skips.py::test_marked - RAG_CI=1 counts a skip as a failure; missing: the widget extra is not installed",
        "ERROR test_skips.py::test_with_fixture - RAG_CI=1 counts a skip as a failure; missing: ../corpus not present",
        "FAILED test_skips.py::test_needs_a_tool - RAG_CI=1 counts a skip as a failure; missing: frobnicate not installed (apt-get install frobnicate)",
        "FAILED test_skips.py::test_clears_the_environment_then_skips - RAG_CI=1 counts a skip as a failure; missing: gadget not installed",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_under_rag_ci_an_allow_listed_hardware_skip_is_listed_with_its_reason(suite, monkeypatch):
    monkeypatch.setenv("RAG_CI", "1")
    result = suite.runpytest_subprocess("-ra", HARDWARE_FILE)
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*= RAG_CI: hardware-only skips (allowed) =*",
        f"SKIPPED {HARDWARE_FILE}::{HARDWARE_TEST}: this CPU has neither AVX512-BF16 nor AMX",
    ])


def test_under_rag_ci_a_skipped_module_fails_collection(pytester, monkeypatch):
    monkeypatch.setenv("RAG_CI", "1")
    pytester.makeconftest(HOOKS)
    pytester.makeini(INI)
    pytester.makepyfile(test_module='import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n')
    result = pytester.runpytest_subprocess("-ra")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RAG_CI=1 counts a skip as a failure; missing: could not import 'no_such_module_here'*"])
