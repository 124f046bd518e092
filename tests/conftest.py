"""Suite-wide settings.

Hypothesis: machines here are shared and noisy, so its timing health checks and per-example
deadlines would fail tests for reasons unrelated to the code; the examples themselves still
run in full.

In CI (``CI=true``) a skip is a failure: a test skipped there for a missing tool or privilege
(serf, ``ip``, docker-compose, root) would otherwise turn a red run quietly green.  Outside CI
a developer without root still gets the skips, each with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "rumor", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("rumor")


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), where a skip is a failure: " \
                          f"{_skip_reason(report)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                     pytest.TestReport]:
    report = yield
    _fail_skip(report)
    return report


class _SkippedModules:
    """Module-level skips (``pytest.importorskip``, ``allow_module_level``) in CI: turning one
    into a collection error would interrupt the whole run, so it fails the session at the end
    instead, listed in the summary."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.skipped.append(f"{report.nodeid}: {_skip_reason(report)}")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            terminalreporter.section("skipped in CI (CI=true), where a skip is a failure")
            for line in self.skipped:
                terminalreporter.line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    if _in_ci():
        config.pluginmanager.register(_SkippedModules(), "rumor-ci-skipped-modules")
