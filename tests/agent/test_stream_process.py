"""Streams against real ``rumor agent`` processes: the seed's curl lines (real curl), resuming
across an agent restart, presence records from a 3-process cluster, and ``rumor stream``.
Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import (
    HTTP_PORT,
    ROOT,
    RUMOR,
    AgentProcess,
    free_host,
    free_subnet,
    stop_all,
    wait_for,
)


class StreamReader:
    """A thread reading ``/v1/event/stream`` NDJSON lines into ``records``."""

    def __init__(self, host: str, query: str) -> None:
        self.conn = http.client.HTTPConnection(host, HTTP_PORT, timeout=10)
        self.conn.request("GET", "/v1/event/stream" + query)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.records: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                obj = json.loads(line)
                if obj == {}:
                    self.heartbeats += 1
                self.records.extend(obj.get("Events") or [])
        except Exception:  # noqa: BLE001  (close() pulls the socket away mid-read)
            return

    def events(self) -> list[dict[str, Any]]:
        return [r for r in list(self.records) if r["Topic"] == "Event"]

    def has(self, topic: str, kind: str, key: str) -> bool:
        return any((r["Topic"], r["Type"], r["Key"]) == (topic, kind, key)
                   for r in list(self.records))

    def close(self) -> None:
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()
        self.thread.join(5)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess("s1", free_host(), tmp_path / "s1").start()
    try:
        a.wait_ready()
        yield a
    finally:
        a.stop(signal.SIGKILL)


def fire(a: AgentProcess, name: str) -> str:
    r = a.fire(name, b"payload")
    assert r.status == 200, r
    return str(r.json()["ID"])


def run_for(line: str, seconds: float) -> tuple[str, str]:
    """Run a shell line as typed (bash), let it stream ``seconds``, stop it, return output."""
    proc = subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(seconds)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    out, err = proc.communicate(timeout=10)
    return out, err


SEED_LINES = [
    "curl -s -v -N http://127.0.0.1:4646/v1/event/stream",
    "curl -s -v -N http://127.0.0.1:4646/v1/event/stream?index=100&topic=Eval",
    "curl -s -v -N \\\n  --data-urlencode \"topic=Node:ccc4ce56-7f0a-4124-b8b1-a4015aa82c40\" \\\n"
    "  --data-urlencode \"topic=Deployment\" \\\n  --data-urlencode \"topic=Job:web\" \\\n"
    "  http://127.0.0.1:4646/v1/event/stream",
]


def test_seed_curl_lines_verbatim(agent: AgentProcess) -> None:
    ids = [fire(agent, "deploy"), fire(agent, "deploy")]
    wait_for(lambda: len(agent.events()) == 2, 10, "both events stored")
    lines = [s.replace("127.0.0.1:4646", agent.http_addr) for s in SEED_LINES]
    out, err = run_for(lines[0], 1.5)
    records = [json.loads(x) for x in out.splitlines()]
    assert [r["Events"][0]["Payload"]["ID"] for r in records
            if r["Events"][0]["Topic"] == "Event"] == ids
    assert all(list(r) == ["Index", "Events"] for r in records)
    assert "< HTTP/1.1 200" in err and "application/json" in err
    # the shell runs `&` as a background job: curl asks for index=100 only, which is newer
    # than anything this agent has, so it gets a Gap record, then everything held
    out, err = run_for(lines[1], 1.5)
    records = [json.loads(x)["Events"][0] for x in out.splitlines()]
    assert (records[0]["Topic"], records[0]["Type"]) == ("Stream", "Gap")
    assert records[0]["Payload"]["Requested"] == 100
    assert [r["Payload"]["ID"] for r in records if r["Topic"] == "Event"] == ids
    # the same URL without a shell: Eval is a Nomad topic rumor accepts and never publishes
    out, err = run_for(f"curl -s -v -N '{lines[1].split()[-1]}'", 1.5)
    assert "< HTTP/1.1 200" in err and [json.loads(x) for x in out.splitlines()][0][
        "Events"][0]["Type"] == "Gap"
    # --data-urlencode POSTs the topics as a form: none of them matches anything here
    out, err = run_for(lines[2], 1.5)
    assert "< HTTP/1.1 200" in err and out == ""


def test_resume_with_last_index_across_an_agent_restart(agent: AgentProcess) -> None:
    first = [fire(agent, f"e{i}") for i in range(3)]
    reader = StreamReader(agent.host, "?topic=Event")
    wait_for(lambda: len(reader.events()) == 3, 10, "three events streamed")
    reader.close()
    assert [r["Payload"]["ID"] for r in reader.events()] == first
    last = reader.events()[-1]["Index"]
    missed = [fire(agent, f"e{i}") for i in range(3, 5)]
    assert agent.stop() == 0
    agent.start().wait_ready()
    missed.append(fire(agent, "e5"))
    reader = StreamReader(agent.host, f"?topic=Event&index={last}")
    try:
        wait_for(lambda: len(reader.events()) == 3, 10, "the missed events")
        time.sleep(0.3)
        got = reader.events()
    finally:
        reader.close()
    assert [e["ID"] for e in agent.events()] == first + missed  # the list survived too
    assert [r["Payload"]["ID"] for r in got] == missed
    assert all(r["Index"] > last for r in got)


def test_presence_records_from_a_three_process_cluster(tmp_path: Path) -> None:
    net = free_subnet(3)
    a, b, c = (AgentProcess(n, f"{net}.{i}", tmp_path / n) for i, n in
               enumerate(("p1", "p2", "p3"), 1))
    try:
        a.start().wait_ready()
        reader = StreamReader(a.host, "?topic=Node")
        for x in (b, c):
            x.start(f"-join={a.serf_addr}").wait_ready()
        wait_for(lambda: reader.has("Node", "NodeJoin", "p2") and
                 reader.has("Node", "NodeJoin", "p3"), 15, "NodeJoin of p2 and p3")
        c.stop(signal.SIGKILL)
        wait_for(lambda: reader.has("Node", "NodeFailed", "p3"), 30, "NodeFailed of p3")
        assert b.stop(signal.SIGTERM) == 0
        wait_for(lambda: reader.has("Node", "NodeLeave", "p2"), 15, "NodeLeave of p2")
        failed = next(r for r in reader.records if r["Type"] == "NodeFailed")
        assert failed["Payload"]["Status"] == 4 and failed["Payload"]["Name"] == "p3"
        left = next(r for r in reader.records if r["Type"] == "NodeLeave")
        assert left["Payload"]["Status"] == 3
        indexes = [r["Index"] for r in reader.records]
        assert indexes == sorted(set(indexes))
        reader.close()
    finally:
        stop_all([a, b, c], signal.SIGKILL)


class Lines:
    """Collects a child's stdout lines in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self.stdout = proc.stdout
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.stdout:
            self.lines.append(line.rstrip("\n"))


def subscribers(a: AgentProcess) -> int:
    try:
        return int(a.get_json("/v1/agent/self")["Stats"]["bus"]["subscribers"])
    except OSError:
        return -1


def test_cli_stream_resumes_by_itself_after_the_agent_restarts(agent: AgentProcess) -> None:
    proc = subprocess.Popen([*RUMOR, "stream", f"-http-addr={agent.http_addr}",
                             "-topic", "Event", "-format", "json"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with proc:  # closes both pipes
        try:
            out = Lines(proc)
            wait_for(lambda: subscribers(agent) == 1, 10, "rumor stream to subscribe")
            ids = [fire(agent, "before")]
            wait_for(lambda: len(out.lines) == 1, 10, "the first line")
            assert agent.stop() == 0
            agent.start().wait_ready()
            ids.append(fire(agent, "after"))  # most likely before the CLI is back
            wait_for(lambda: len(out.lines) == 2, 20, "the event fired during the reconnect")
            ids.append(fire(agent, "later"))
            wait_for(lambda: len(out.lines) == 3, 10, "a later event")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            out.thread.join(10)
        assert proc.stderr is not None and "reconnecting" in proc.stderr.read()
    records = [json.loads(x) for x in out.lines]
    assert [r["Payload"]["ID"] for r in records] == ids


def test_cli_stream_pretty_and_bad_flags(agent: AgentProcess) -> None:
    fire(agent, "deploy-web")
    proc = subprocess.Popen([*RUMOR, "stream", f"-http-addr={agent.http_addr}", "-index=0",
                             "-topic=Event:deploy-*", "-format=pretty"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with proc:  # closes both pipes
        try:
            out = Lines(proc)
            wait_for(lambda: any(x == "}" for x in out.lines), 10, "one pretty record")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            out.thread.join(10)
    assert out.lines[0] == "rumor/event/deploy-web\t{" and '    "Topic": "Event",' in out.lines
    bad = subprocess.run([*RUMOR, "stream", f"-http-addr={agent.http_addr}", "-topic=Foo"],
                         cwd=ROOT, text=True, capture_output=True, timeout=30)
    assert bad.returncode == 1 and "unknown topic 'Foo'" in bad.stderr
    bad = subprocess.run([*RUMOR, "stream", "-format=xml"], cwd=ROOT, text=True,
                         capture_output=True, timeout=30)
    assert bad.returncode == 1 and "-format must be json or pretty" in bad.stderr
