"""The suite's own rules, checked by running small suites under our tests/conftest.py:
in CI a skip fails the run; every test has a deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SKIPPING = """
import sys
import pytest

def test_passes():
    pass

def test_skips_inside():
    pytest.skip("no serf here")

@pytest.mark.skipif(True, reason="needs root")
def test_skipped_by_mark():
    pass

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_known_bug():
    assert False
"""

MODULE_SKIP = """
import pytest
pytest.importorskip("no_such_module_for_rumor")

def test_never_collected():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
         ci: str | None) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_skipping=SKIPPING, test_module_skip=MODULE_SKIP)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_in_ci_every_skip_fails_the_run(pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "true")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1
    # the in-test skip fails the test, the mark's skip fails its setup (an error), the module
    # skip is counted, listed, and fails the session
    assert outcomes["failed"] == 1
    assert outcomes["errors"] == 1
    assert outcomes["skipped"] == 1
    assert outcomes["xfailed"] == 1  # an expected failure is not a skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped in CI*needs root*", "*skipped in CI*no serf here*"])
    result.stdout.fnmatch_lines(["*skipped in CI (CI=true), where a skip is a failure*",
                                 "test_module_skip.py: *no_such_module_for_rumor*"])


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_skip_stays_a_skip(pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    result = _run(pytester, monkeypatch, ci)
    assert result.parseoutcomes() == {"passed": 1, "skipped": 3, "xfailed": 1}
    assert result.ret == 0


def test_every_test_has_a_deadline(request: pytest.FixtureRequest) -> None:
    # pytest-timeout is installed and the suite-wide default is set (pyproject.toml)
    assert request.config.pluginmanager.hasplugin("timeout")
    assert float(request.config.getini("timeout")) > 0


def test_a_hang_fails_with_a_timeout_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hang="""
import time
import pytest

@pytest.mark.timeout(0.5)
def test_hangs():
    time.sleep(30)
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*0.5*"])


def test_in_ci_a_module_skip_alone_fails_the_run(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", test_module_skip=MODULE_SKIP)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
