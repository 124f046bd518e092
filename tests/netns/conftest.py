"""The netns tests' measured figures (failure detection and heal times), shown in every run.

A test asks for the ``figure`` fixture and calls ``figure("cut h3: declared failed ...")``:
the line is printed (seen with ``-s``) and kept, and at the end of the session pytest's
terminal summary lists every kept line under "netns figures" -- also without ``-s`` and
also when a later wait of the same test fails, so CI logs always carry the heal times.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``figure(text)``: print one measured figure and list it in the session summary."""
    kept = request.config.stash.setdefault(_FIGURES, [])
    test = request.node.name

    def record(text: str) -> None:
        print(f"[netns] {text}")
        kept.append(f"{test}: {text}")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    kept = config.stash.get(_FIGURES, [])
    if kept:
        terminalreporter.section("netns figures (seconds, measured in this run)")
        for line in kept:
            terminalreporter.line(line)
