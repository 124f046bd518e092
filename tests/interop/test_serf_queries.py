"""``serf query`` against rumor nodes: they ack like a serf agent without handlers (and send
no answer), honour node and tag filters, and forward relayed answers (``-relay-factor``)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import trio

from agent.agent import Agent
from agent.config import AgentConfig
from gossip.crypto import Keyring
from gossip.node import GossipNode
from gossip.query_wire import (
    decode_key_response,
    decode_query,
    decode_query_response,
    encode_key_request,
    encode_key_response,
    encode_query,
    encode_query_response,
)
from tests.interop.serfagent import SERF, SerfAgent
from tests.interop.test_serf_membership import eventually


async def serf_query(agent: SerfAgent, *args: str) -> dict[str, object]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([SERF or "serf", "query", f"-rpc-addr={agent.rpc}",
                               "-format=json", "-timeout=3s", *args],
                              capture_output=True, text=True, timeout=30)
    res = await trio.to_thread.run_sync(run)
    assert res.returncode == 0, res.stdout + res.stderr
    out: dict[str, object] = json.loads(res.stdout)
    return out


async def test_rumor_acks_filters_and_relays(net: str, agents: list[SerfAgent],
                                             nursery: trio.Nursery) -> None:
    agents.append(await SerfAgent.start("serf1", f"{net}.1", tags={"role": "web"}))
    agents.append(await SerfAgent.start("serf2", f"{net}.2", join=f"{net}.1:7946",
                                        tags={"role": "web"}))
    rumors = [GossipNode(f"rumor{i}", (f"{net}.{10 + i}", 7946), tags={"role": f"rumor{i}"})
              for i in (1, 2)]
    for r in rumors:
        await nursery.start(r.run)
        assert await r.join([(f"{net}.1", 7946)]) == 1
    names = {"serf1", "serf2", "rumor1", "rumor2"}
    async def all_alive() -> bool:
        return {n for n, v in (await agents[0].members()).items() if v[1] == "alive"} \
            == names and all(len(r.members()) == 4 for r in rumors)
    await eventually(all_alive, 15, "4 alive")

    with trio.fail_after(60):
        out = await serf_query(agents[0], "hello", "x")
        assert sorted(out["Acks"]) == sorted(names)  # type: ignore[arg-type]
        assert out["Responses"] == {}  # no query handlers anywhere: acks only
        out = await serf_query(agents[0], "-node=rumor2", "-node=serf2", "hello", "x")
        assert sorted(out["Acks"]) == ["rumor2", "serf2"]  # type: ignore[arg-type]
        out = await serf_query(agents[1], "-tag", "role=^rumor", "hello", "x")
        assert sorted(out["Acks"]) == ["rumor1", "rumor2"]  # type: ignore[arg-type]
        out = await serf_query(agents[0], "-relay-factor=3", "hello", "x")
        assert sorted(out["Acks"]) == sorted(names)  # type: ignore[arg-type]
        # with 4 members and relay factor 3, every other member relays each remote ack
        assert sum(r.stats().query_answers_relayed for r in rumors) >= 2


async def test_name_conflict_with_serf_agents(net: str, agents: list[SerfAgent],
                                              nursery: trio.Nursery, tmp_path: Path) -> None:
    """A rumor agent that takes a serf agent's name loses Serf's ``_serf_conflict`` vote and
    stops; the serf agent wins, counting the answer of an honest rumor node too."""
    agents.append(await SerfAgent.start("serf1", f"{net}.1"))
    agents.append(await SerfAgent.start("serf2", f"{net}.2", join=f"{net}.1:7946"))
    honest = GossipNode("rumor1", (f"{net}.10", 7946))
    await nursery.start(honest.run)
    assert await honest.join([(f"{net}.1", 7946)]) == 1
    async def members_are(n: int) -> bool:
        return len(await agents[0].members()) == n
    await eventually(lambda: members_are(3), 10, "3 members")
    impostor = Agent(AgentConfig(node_name="serf2", bind_addr=f"{net}.11", serf_lan_port=7946,
                                 data_dir=str(tmp_path / "impostor")))
    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            await impostor.start(inner)
            await impostor.join([f"{net}.2:7946"])  # serf2 itself sees the conflict
            await impostor.shutdown.wait()
            inner.cancel_scope.cancel()
        impostor.close()  # as run_agent does: the event and bus logs are ours to close
    assert impostor.fatal is not None and "name" in impostor.fatal
    assert "of 3 answers" in impostor.fatal or "of 2 answers" in impostor.fatal
    await eventually(lambda: "majority in name conflict resolution" in agents[1].log(), 15,
                     "serf2 won the vote")
    won = re.search(r"majority in name conflict resolution \[(\d+) / (\d+)\]", agents[1].log())
    assert won is not None and int(won.group(2)) >= 2  # serf1 and rumor1 answered
    assert (await agents[0].members())["serf2"][0] == f"{net}.2:7946"


async def test_codec_reproduces_serfs_bytes(net: str, agents: list[SerfAgent],
                                            nursery: trio.Nursery) -> None:
    """Live golden bytes: the query serf sends for ``serf keys -list`` and the answers serf
    sends to a rumor-originated key query re-encode to exactly the bytes Go produced."""
    key = base64.b64encode(b"g" * 32).decode()
    agents.append(await SerfAgent.start("serf1", f"{net}.1", encrypt=key))
    node = GossipNode("rumor1", (f"{net}.10", 7946), keyring=Keyring([b"g" * 32]))
    seen: list[bytes] = []
    await nursery.start(node.run)
    core = node._serf
    original = core.notify_msg

    def record(now: float, msg: bytes) -> None:
        seen.append(msg)
        original(now, msg)
    core.notify_msg = record  # type: ignore[method-assign]
    assert await node.join([(f"{net}.1", 7946)]) == 1
    async def two_members() -> bool:
        return len(await agents[0].members()) == 2
    await eventually(two_members, 10, "2 members")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([SERF or "serf", "keys", f"-rpc-addr={agents[0].rpc}", "-list"],
                              capture_output=True, text=True, timeout=30)
    with trio.fail_after(30):
        assert (await trio.to_thread.run_sync(run)).returncode == 0
        resp = await node.key_operation("list")
    assert resp.error() is None and resp.keys == {key: 2}
    queries = [m for m in seen if m[0] == 4]
    answers = [m for m in seen if m[0] == 5]
    assert queries and answers
    for raw in queries:
        q = decode_query(raw[1:])
        assert q.name == "_serf_list-keys" and q.payload == encode_key_request(b"")
        assert encode_query(q) == raw
    for raw in answers:
        r = decode_query_response(raw[1:])
        assert encode_query_response(r) == raw
        assert r.payload is not None
        assert encode_key_response(decode_key_response(r.payload)) == r.payload
