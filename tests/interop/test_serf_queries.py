"""``serf query`` against rumor nodes: they ack like a serf agent without handlers (and send
no answer), honour node and tag filters, and forward relayed answers (``-relay-factor``)."""

from __future__ import annotations

import json
import subprocess

import trio

from gossip.node import GossipNode
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
    agents.append(SerfAgent("serf1", f"{net}.1", tags={"role": "web"}))
    agents.append(SerfAgent("serf2", f"{net}.2", join=f"{net}.1:7946", tags={"role": "web"}))
    rumors = [GossipNode(f"rumor{i}", (f"{net}.{10 + i}", 7946), tags={"role": f"rumor{i}"})
              for i in (1, 2)]
    for r in rumors:
        await nursery.start(r.run)
        assert await r.join([(f"{net}.1", 7946)]) == 1
    names = {"serf1", "serf2", "rumor1", "rumor2"}
    await eventually(lambda: {n for n, v in agents[0].members().items() if v[1] == "alive"}
                     == names and all(len(r.members()) == 4 for r in rumors), 15, "4 alive")

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
        assert sum(r.serf.queries.metrics.relayed for r in rumors) >= 2
