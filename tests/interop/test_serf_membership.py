"""Interop with the real serf 0.9.4 agent: one cluster of rumor nodes and serf agents.

Real processes and real sockets on 127.x.y.z; every wait is a bounded poll.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import trio

from gossip.node import GossipNode
from gossip.serf import MemberStatus
from tests.interop.serfagent import SerfAgent


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float,
                     what: str) -> None:
    """Poll ``check`` (plain or async) every 0.1 s until true; AssertionError after
    ``timeout`` seconds."""
    async def holds() -> bool:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    with trio.move_on_after(timeout):
        while not await holds():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


async def is_(status: Awaitable[str], expected: str) -> bool:
    return await status == expected


def status_of(node: GossipNode, name: str) -> MemberStatus | None:
    for m in node.members():
        if m.name == name:
            return m.status
    return None


async def test_rumor_joins_serf_cluster_and_leaves(net: str, agents: list[SerfAgent],
                                                   nursery: trio.Nursery) -> None:
    agents.append(await SerfAgent.start("serf1", f"{net}.1", tags={"role": "web"}))
    agents.append(await SerfAgent.start("serf2", f"{net}.2", join=f"{net}.1:7946"))
    node = GossipNode("rumor1", (f"{net}.10", 7946), tags={"role": "rumor", "dc": "dc1"})
    await nursery.start(node.run)
    assert await node.join([(f"{net}.1", 7946)]) == 1

    await eventually(lambda: status_of(node, "serf1") is MemberStatus.ALIVE and
                     status_of(node, "serf2") is MemberStatus.ALIVE, 10, "rumor sees serf")
    tags = {m.name: m.tags for m in node.members()}
    assert tags["serf1"] == {"role": "web"}
    for a in agents:
        await eventually(lambda a=a: is_(a.status_of("rumor1"), "alive"),
                         10, f"{a.name} lists rumor1 alive")
        addr, status, tag_text = (await a.members())["rumor1"]
        assert addr == f"{net}.10:7946"
        assert sorted(tag_text.split(",")) == ["dc=dc1", "role=rumor"]

    assert await node.leave(timeout=5)
    for a in agents:
        await eventually(lambda a=a: is_(a.status_of("rumor1"), "left"), 10,
                         f"{a.name} lists rumor1 left")


async def test_serf_joins_rumor_and_kill_is_detected(net: str, agents: list[SerfAgent],
                                                     nursery: trio.Nursery) -> None:
    node = GossipNode("rumor1", (f"{net}.10", 7946), tags={"role": "rumor"})
    await nursery.start(node.run)
    agents.append(await SerfAgent.start("serf1", f"{net}.1", join=f"{net}.10:7946"))
    agents.append(await SerfAgent.start("serf2", f"{net}.2", join=f"{net}.10:7946"))
    await eventually(lambda: status_of(node, "serf1") is MemberStatus.ALIVE and
                     status_of(node, "serf2") is MemberStatus.ALIVE, 10, "rumor sees serf")
    await eventually(lambda: is_(agents[1].status_of("serf1"), "alive"),
                     10, "serf agents see each other through rumor")
    assert await agents[0].status_of("rumor1") == "alive"

    await agents[1].kill()
    await eventually(lambda: status_of(node, "serf2") is MemberStatus.FAILED, 20,
                     "rumor marks the killed serf agent failed")
    await eventually(lambda: is_(agents[0].status_of("serf2"), "failed"), 20,
                     "the surviving serf agent agrees")
    assert status_of(node, "serf1") is MemberStatus.ALIVE


async def test_encrypted_cluster_with_serf(net: str, agents: list[SerfAgent],
                                           nursery: trio.Nursery) -> None:
    from gossip.crypto import Keyring, decode_key, keygen

    key = keygen()
    agents.append(await SerfAgent.start("serf1", f"{net}.1", encrypt=key))
    node = GossipNode("rumor1", (f"{net}.10", 7946), keyring=Keyring([decode_key(key)]))
    await nursery.start(node.run)
    assert await node.join([(f"{net}.1", 7946)]) == 1
    await eventually(lambda: is_(agents[0].status_of("rumor1"), "alive"),
                     10, "serf lists the encrypted rumor node alive")
    await agents[0].event("enc", "secret")
    got: list[str] = []
    node.on_delivery = lambda d: got.append(getattr(d, "name", ""))
    await eventually(lambda: "enc" in got, 10, "an encrypted serf event reaches rumor")

    stranger = GossipNode("rumor2", (f"{net}.11", 7946),
                          keyring=Keyring([decode_key(keygen())]))
    await nursery.start(stranger.run)
    assert await stranger.join([(f"{net}.1", 7946)]) == 0  # wrong key: serf refuses us
    assert "rumor2" not in await agents[0].members()
