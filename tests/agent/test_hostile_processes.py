"""Issue 13 items 1, 3 and 4 as a user meets them: three real ``rumor agent`` processes
(unencrypted, as in the report) attacked by an outsider on loopback with one forged Serf user
event at Lamport time 2**64-1, a forged ``dead`` at incarnation 2**32-1 and one push-pull
stream inventing 20,000 members.  Afterwards fires answer 200 and reach every agent within
2 s, every agent lists exactly the three real members alive, and an agent killed and
restarted with its data dir rejoins (nothing hostile was persisted)."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip import wire
from gossip.serf import SerfMsg
from gossip.state import State
from tests.agent.helpers import SERF_PORT, AgentProcess, random_subnet, stop_all, wait_for

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
VSN = bytes([1, 5, 2, 2, 5, 5])
NAMES = ("h1", "h2", "h3")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    net = random_subnet()
    agents = [AgentProcess(n, f"{net}.{i + 1}", tmp_path / n) for i, n in enumerate(NAMES)]
    try:
        agents[0].start().wait_ready()
        for a in agents[1:]:
            a.start(f"-join={agents[0].serf_addr}").wait_ready()
        for a in agents:
            wait_for(lambda a=a: a.alive_members() == set(NAMES), 15, f"{a.name} to see all")
        yield agents
    finally:
        stop_all(agents)


def outsider(a: AgentProcess) -> str:
    return a.host.rsplit(".", 1)[0] + ".200"


def send_udp(src: str, dst: AgentProcess, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.sendto(data, (dst.host, SERF_PORT))


def push_fake_members(src: str, dst: AgentProcess, count: int) -> None:
    blob = wire.encode_push_pull(wire.PushPull(False, tuple(
        wire.PushNodeState(f"fake-{i}", bytes([10, 97, i // 256 % 256, i % 256]), 7946,
                           b"\xff\x80", 1, State.ALIVE, VSN) for i in range(count)), b""))
    with socket.create_connection((dst.host, SERF_PORT), timeout=10,
                                  source_address=(src, 0)) as s:
        s.sendall(blob)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        try:
            while s.recv(1 << 16):
                pass
        except OSError:
            pass  # the agent may close the exchange: what matters is what it did with it


def everyone_has(agents: list[AgentProcess], name: str) -> bool:
    return all(any(e["Name"] == name for e in a.events()) for a in agents)


def test_forged_packets_and_a_member_flood_leave_three_processes_working(
        cluster: list[AgentProcess]) -> None:
    a1, a2, a3 = cluster
    src = outsider(a1)
    evil = bytes([wire.MsgType.USER, SerfMsg.USER_EVENT]) + wire.packb(
        {"LTime": U64, "Name": "evil", "Payload": b"", "CC": False})
    for a in cluster:
        send_udp(src, a, evil)
        send_udp(src, a, wire.encode(wire.Dead(U32, "h2", "h1")))
    push_fake_members(src, a1, 20_000)

    # item 1: the clock did not move; a fire is a 200 and reaches everyone quickly
    r = a1.fire("deploy", b"v1")
    assert r.status == 200, r.text
    assert r.json()["LTime"] < 1 << 20
    started = time.monotonic()
    wait_for(lambda: everyone_has(cluster, "deploy"), 2.0, "the fire to reach all three")
    assert time.monotonic() - started <= 2.0
    assert not any(e["Name"] == "evil" for a in cluster for e in a.events())
    # items 3 and 4: exactly the real members, all alive, on every agent
    for a in cluster:
        members = {m["Name"]: m["Status"] for m in a.get_json("/v1/agent/members")}
        assert members == dict.fromkeys(NAMES, 1), (a.name, len(members))
        m = a.metrics()
        assert m["rumor_ltime_jumps_dropped_total"] >= 1
    assert a1.metrics()["rumor_members_refused_total"] >= 20_000 - 64

    # nothing hostile was persisted: h2, killed and restarted with its data dir, rejoins
    # (from its snapshot) and fires again; everybody sees it alive
    a2.stop(signal.SIGKILL)
    lines = [json.loads(x) for x in (a2.data_dir / "events.jsonl").read_text().splitlines()
             if x.strip()]
    assert any(doc.get("Name") == "deploy" for doc in lines)
    assert all(0 <= doc.get("LTime", 0) < 1 << 20 for doc in lines)
    a2.start().wait_ready()
    for a in cluster:
        wait_for(lambda a=a: a.alive_members() == set(NAMES), 20, f"{a.name} to see h2 back")
    r = a2.fire("after-restart", b"")
    assert r.status == 200, r.text
    wait_for(lambda: everyone_has(cluster, "after-restart"), 5.0, "the restarted agent's fire")
