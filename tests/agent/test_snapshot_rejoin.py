"""Snapshot and rejoin through real ``rumor agent`` processes (Serf's -snapshot / -rejoin).

A crashed agent restarted without ``-join`` rejoins the members it knew and its Lamport
clocks are at least what they were; after a graceful leave it stays out unless started with
``-rejoin``; a damaged snapshot is reported with file and line and never stops the start.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.helpers import AgentProcess, free_subnet, stop_all, wait_for

CLOCKS = ("rumor_member_clock", "rumor_event_clock", "rumor_query_clock")


def clocks(a: AgentProcess) -> tuple[float, ...]:
    m = a.metrics()
    return tuple(m[k] for k in CLOCKS)


def snapshot_text(a: AgentProcess) -> str:
    try:
        return (a.data_dir / "serf" / "local.snapshot").read_text()
    except OSError:
        return ""


@pytest.fixture
def trio_of_agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    net = free_subnet(3)
    agents = [AgentProcess(f"n{i}", f"{net}.{i}", tmp_path / f"n{i}") for i in (1, 2, 3)]
    try:
        agents[0].start().wait_ready()
        for a in agents[1:]:
            a.start(f"-join={agents[0].serf_addr}").wait_ready()
        for a in agents:
            wait_for(lambda a=a: a.alive_members() == {"n1", "n2", "n3"}, 15,
                     f"{a.name} to see all 3")
        yield agents
    finally:
        stop_all(agents, signal.SIGKILL)


def test_crashed_agent_rejoins_without_join_and_clocks_never_go_back(
        trio_of_agents: list[AgentProcess]) -> None:
    n1, n2, n3 = trio_of_agents
    for i in range(5):
        assert n1.fire(f"e{i}").status == 200
    wait_for(lambda: len(n3.events()) == 5, 10, "n3 has the events")
    before = clocks(n3)
    assert before[1] >= 6
    wait_for(lambda: f"event-clock: {int(before[1]) - 1}" in snapshot_text(n3), 5,
             "n3's snapshot caught up with its event clock")
    n3.stop(signal.SIGKILL)
    wait_for(lambda: "n3" not in n1.alive_members(), 15, "n1 notices n3 is gone")
    n3.start().wait_ready()  # no -join
    after = clocks(n3)
    assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)
    wait_for(lambda: n3.alive_members() == {"n1", "n2", "n3"}, 15, "n3 rejoined by itself")
    wait_for(lambda: n1.alive_members() == {"n1", "n2", "n3"}, 15, "n1 sees n3 again")
    assert "re-joined via previously known node" in n3.log_path.read_text()
    assert n2.fire("after").status == 200
    wait_for(lambda: [e for e in n3.events() if e["Name"] == "after"], 10, "events flow")


def test_after_a_graceful_leave_only_rejoin_brings_it_back(
        trio_of_agents: list[AgentProcess]) -> None:
    n1, _, n3 = trio_of_agents
    n3.stop(signal.SIGTERM)  # leave_on_terminate: a graceful leave, recorded in the snapshot
    assert "leave" in snapshot_text(n3).splitlines()
    wait_for(lambda: "n3" not in n1.alive_members(), 15, "n1 sees n3 left")
    n3.start().wait_ready()
    time.sleep(2)  # it would have rejoined within this if it were going to
    assert n3.alive_members() == {"n3"}
    n3.stop(signal.SIGKILL)
    n3.start("-rejoin").wait_ready()
    wait_for(lambda: n3.alive_members() == {"n1", "n2", "n3"}, 15, "-rejoin rejoined")


def test_damaged_snapshot_is_reported_and_the_agent_still_rejoins(
        trio_of_agents: list[AgentProcess]) -> None:
    n1, _, n3 = trio_of_agents
    n3.stop(signal.SIGKILL)
    path = n3.data_dir / "serf" / "local.snapshot"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"clock: 99999999999999999999999\nalive: n1 {n1.serf_addr}\n"
                    "alive: ghost 999.1.1.1:8301\n\x00\x01garbage\nevent-clock: 12\n"
                    "query-clock: 4")
    n3.start().wait_ready()
    log = n3.log_path.read_text()
    assert f"snapshot {path} line 1 skipped" in log and f"snapshot {path} line 3" in log
    assert clocks(n3)[1] >= 13  # event-clock 12 restored: the next one handed out is 13
    wait_for(lambda: n3.alive_members() == {"n1", "n2", "n3"}, 15, "n3 rejoined via n1")
