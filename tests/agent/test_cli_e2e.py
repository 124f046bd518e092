"""The ``rumor`` console script against a real ``rumor agent`` process.

``rumor event`` prints the ID of an event the agent then lists; ``rumor members`` shows the
agent; ``rumor watch`` hands each event to its handler exactly once, even when the agent is
restarted (same ``-data-dir``) under it.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.helpers import ROOT, RUMOR, AgentProcess, free_host, run_cli, wait_for


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess("cli1", free_host(), tmp_path_factory.mktemp("cli") / "cli1")
    try:
        yield a.start().wait_ready()
    finally:
        a.stop()


def test_event_prints_id_and_is_listed(agent: AgentProcess) -> None:
    r = run_cli("event", f"-http-addr={agent.http_addr}", "-name=x", "payload")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"Event ID: ([0-9a-f-]{36})\n", r.stdout)
    assert m, r.stdout
    events = agent.events("x")
    assert [e["ID"] for e in events] == [m.group(1)]
    r = run_cli("event", f"-http-addr={agent.http_addr}", "-name=_x")
    assert r.returncode == 1 and "400" in r.stderr
    assert [e["ID"] for e in agent.events("x")] == [m.group(1)]


def test_members_shows_the_agent(agent: AgentProcess) -> None:
    r = run_cli("members", f"-http-addr={agent.http_addr}")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["Node", "Address", "Status"]
    assert rows[1][:3] == ["cli1", f"{agent.host}:8301", "alive"]


def test_watch_without_handler_prints_the_events(agent: AgentProcess) -> None:
    r = run_cli("event", f"-http-addr={agent.http_addr}", "-name=once", "hello")
    assert r.returncode == 0
    r = run_cli("watch", "-type=event", "-name=once", f"-http-addr={agent.http_addr}")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)
    assert [e["Name"] for e in events] == ["once"] and events[0]["Payload"] == "aGVsbG8="


def test_watch_never_hands_an_event_twice_across_agent_restart(
        agent: AgentProcess, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fired = [agent.fire("w", f"{i}".encode()).json()["ID"] for i in range(2)]
    watch = subprocess.Popen(
        [*RUMOR, "watch", "-type=event", "-name=w", "-max-events=4", "-timeout=45s",
         "-wait=30s", f"-http-addr={agent.http_addr}", f"cat >> '{out}'"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(lambda: out.exists() and out.read_text().count("\n") == 1, 10,
                 "the first batch")
        assert agent.stop() == 0
        agent.start().wait_ready()
        assert [e["ID"] for e in agent.events("w")] == fired  # the list survived the restart
        fired += [agent.fire("w", f"{i}".encode()).json()["ID"] for i in range(2, 4)]
        stdout, stderr = watch.communicate(timeout=40)  # reconnects after its 5 s backoff
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5)
    assert watch.returncode == 0, stderr
    batches = [json.loads(line) for line in out.read_text().splitlines()]
    delivered = [e["ID"] for batch in batches for e in batch]
    assert delivered == fired  # every event once, in order, none twice
    assert [e["Name"] for batch in batches for e in batch] == ["w"] * 4


def test_agent_exits_1_when_retry_join_gives_up(tmp_path: Path) -> None:
    host = free_host()
    peer = host.rsplit(".", 1)[0] + ".255"  # nobody there
    r = run_cli("agent", "-node=lonely", f"-bind={host}", f"-client={host}",
                f"-data-dir={tmp_path}", f"-retry-join={peer}:9", "-retry-max=2",
                "-retry-interval=50ms", "-log-level=ERR", timeout=20)
    assert r.returncode == 1, r.stderr
    assert "retry-join gave up after 2 attempts" in r.stderr and f"{peer}:9" in r.stderr


def test_leave_command_stops_the_agent(tmp_path: Path) -> None:
    a = AgentProcess("leaver", free_host(), tmp_path / "leaver").start().wait_ready()
    try:
        r = run_cli("leave", f"-http-addr={a.http_addr}")
        assert r.returncode == 0, r.stderr
        assert a.proc is not None
        assert a.proc.wait(15) == 0, a.log_tail()
        assert "graceful leave" in a.log_path.read_text()
    finally:
        a.stop(signal.SIGKILL)


def test_monitor_command_streams_agent_logs(agent: AgentProcess) -> None:
    mon = subprocess.Popen([*RUMOR, "monitor", "-log-level=debug",
                            f"-http-addr={agent.http_addr}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert mon.stdout is not None
        for line in mon.stdout:
            lines.put(line)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        name = "monitored"
        deadline = time.monotonic() + 10
        found = ""
        while not found and time.monotonic() < deadline:
            agent.fire(name)  # until the monitor is subscribed, the log line goes nowhere
            try:
                while not found:
                    line = lines.get(timeout=0.2)
                    found = line if f"new event {name}" in line else ""
            except queue.Empty:
                pass
        assert found, "no log line reached rumor monitor"
        assert re.match(r"^\S+Z \[DEBUG\] rumor\.agent: agent: new event monitored ", found)
    finally:
        mon.terminate()
        assert mon.wait(10) == 0
        pumper.join(10)  # it ends at EOF, once the monitor has exited
        assert mon.stdout is not None and mon.stderr is not None
        mon.stdout.close()
        mon.stderr.close()
