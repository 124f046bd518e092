"""What a user sees of hostile gossip (issue 13, items 1, 3 and 4, gossip side), against two
in-process agents over real loopback sockets: one forged datagram with Lamport time 2**64-1,
a forged dead at incarnation 2**32-1 and a 20,000-member push-pull change nothing a user
relies on: fire answers 200 and the event arrives, the member list stays true, and
/v1/agent/metrics counts what was dropped."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from gossip import wire
from gossip.serf import SerfMsg
from gossip.state import State
from tests.agent.helpers import InProc, eventually, in_process_agent, prometheus, random_subnet

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
VSN = bytes([1, 5, 2, 2, 5, 5])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[InProc, InProc]]:
    net = random_subnet()
    async with in_process_agent(f"{net}.1", "a1") as a, \
            in_process_agent(f"{net}.2", "a2") as b:
        with trio.fail_after(10):
            assert await b.agent.join([a.serf_addr]) == 1
        await eventually(lambda: len(a.agent.node.members()) == 2, "a1 to see a2")
        yield a, b


def send_udp(src_host: str, dst: InProc, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src_host, 0))
        s.sendto(data, (dst.host, dst.agent.node.port))


async def metrics(x: InProc) -> dict[str, float]:
    r = await x.client.get("/v1/agent/metrics", params={"format": "prometheus"})
    assert r.status_code == 200
    return prometheus(r.text)


async def test_forged_clock_and_incarnation_leave_the_cluster_working(
        pair: tuple[InProc, InProc]) -> None:
    a, b = pair
    outsider = a.host.rsplit(".", 1)[0] + ".200"
    event = bytes([wire.MsgType.USER, SerfMsg.USER_EVENT]) + wire.packb(
        {"LTime": U64, "Name": "evil", "Payload": b"", "CC": False})
    for x in (a, b):
        send_udp(outsider, x, event)
        send_udp(outsider, x, wire.encode(wire.Dead(U32, "a2", "a1")))
    with trio.fail_after(10):
        await eventually(lambda: all(x.agent.node.stats().ltime_jumps_dropped == 1
                                     for x in (a, b)), "the forged event dropped")
        r = await a.client.put("/v1/event/fire/deploy", content=b"v1")
        assert r.status_code == 200, r.text
        assert r.json()["LTime"] < 1 << 20

        async def names(x: InProc) -> list[str]:
            return [e["Name"] for e in (await x.client.get("/v1/event/list")).json()]
        got: list[str] = []

        async def poll() -> None:
            while "deploy" not in got:
                got[:] = await names(b)
                await trio.sleep(0.05)
        await poll()
        assert "evil" not in got and "evil" not in await names(a)
        await trio.sleep(1)
        members = (await a.client.get("/v1/agent/members")).json()
        assert {m["Name"]: m["Status"] for m in members} == {"a1": 1, "a2": 1}
        assert b.agent.node._serf.ml.local.incarnation < 10
        for x in (a, b):
            m = await metrics(x)
            assert m["rumor_ltime_jumps_dropped_total"] == 1
            assert m["rumor_incarnation_jumps_dropped_total"] >= 1


async def test_a_20000_member_push_pull_lists_no_invention(pair: tuple[InProc, InProc]) -> None:
    a, b = pair
    blob = wire.encode_push_pull(wire.PushPull(False, tuple(
        wire.PushNodeState(f"fake-{i}", bytes([10, 97, i // 256 % 256, i % 256]), 7946,
                           b"\xff\x80", 1, State.ALIVE, VSN) for i in range(20_000)), b""))
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream(a.host, a.agent.node.port)
        await stream.send_all(blob)
        await stream.receive_some(1 << 20)
        await stream.aclose()
        await trio.sleep(0.5)
        members = (await a.client.get("/v1/agent/members")).json()
        assert sorted(m["Name"] for m in members) == ["a1", "a2"]
        m = await metrics(a)
        assert m["rumor_members_refused_total"] >= 20_000 - 64
        assert m["rumor_members_unverified"] <= 64
        r = await a.client.put("/v1/event/fire/after", content=b"")
        assert r.status_code == 200

        async def arrived() -> None:
            while "after" not in [e["Name"] for e in
                                  (await b.client.get("/v1/event/list")).json()]:
                await trio.sleep(0.05)
        with trio.fail_after(2):
            await arrived()
