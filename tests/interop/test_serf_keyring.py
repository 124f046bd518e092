"""Gossip key rotation in a mixed encrypted cluster: 2 real serf 0.9.4 agents + 2 rumor agents.

``serf keys`` run at a serf agent must rotate the rumor nodes (they answer Serf's internal
key queries), a rotation started from rumor's HTTP API must rotate the serf agents, events
must keep flowing both ways throughout, and a rumor agent restarted afterwards must come
back with the rotated key from its data dir.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from agent.agent import Agent
from agent.config import AgentConfig
from tests.interop.serfagent import SERF, SerfAgent
from tests.interop.test_serf_events import handler_script, received
from tests.interop.test_serf_membership import eventually

K1, K2, K3 = (base64.b64encode(bytes([i]) * 32).decode() for i in (1, 2, 3))


@asynccontextmanager
async def rumor_agent(name: str, ip: str, data: Path) -> AsyncIterator[Agent]:
    agent = Agent(AgentConfig(node_name=name, bind_addr=ip, serf_lan_port=7946,
                              data_dir=str(data), encrypt=K1))
    async with trio.open_nursery() as nursery:
        await agent.start(nursery)
        try:
            yield agent
        finally:
            agent.close()  # as run_agent does: the event and bus logs are ours to close
            nursery.cancel_scope.cancel()


async def serf_keys(agent: SerfAgent, *args: str) -> subprocess.CompletedProcess[str]:
    """``serf keys`` in a worker thread: the rumor nodes must keep answering meanwhile."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([SERF or "serf", "keys", f"-rpc-addr={agent.rpc}", *args],
                              capture_output=True, text=True, timeout=30)
    return await trio.to_thread.run_sync(run)


def serf_listed(out: str) -> dict[str, str]:
    """``KEY  [n/N]`` lines of ``serf keys -list``."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+=)\s+\[(\d+/\d+)\]", out, re.M)}


async def test_rotation_from_serf_then_from_rumor(net: str, agents: list[SerfAgent],
                                                   tmp_path: Path) -> None:
    script = handler_script(tmp_path)
    agents.append(await SerfAgent.start("serf1", f"{net}.1", encrypt=K1, handler=f"user={script}"))
    agents.append(await SerfAgent.start("serf2", f"{net}.2", encrypt=K1, join=f"{net}.1:7946"))
    serf1 = agents[0]
    names = {"serf1", "serf2", "rumor1", "rumor2"}
    fired = {"n": 0}

    with trio.fail_after(150):
        async with rumor_agent("rumor1", f"{net}.10", tmp_path / "r1") as r1, \
                rumor_agent("rumor2", f"{net}.11", tmp_path / "r2") as r2:
            await r1.join([f"{net}.1:7946"])
            await r2.join([f"{net}.2:7946"])

            async def all_alive() -> bool:
                return all({m.name for m in r.node.members() if m.status == 1} == names
                           for r in (r1, r2)) and \
                    {n for n, v in (await serf1.members()).items() if v[1] == "alive"} == names
            await eventually(all_alive, 15, "all four alive everywhere")

            async def events_flow(step: str) -> None:
                """An event from serf reaches both rumors; one from rumor reaches serf1."""
                fired["n"] += 1
                n = fired["n"]
                await serf1.event(f"s-{step}", "x")
                r2.fire(f"r-{step}", b"y")
                await eventually(lambda: all(r.store.list(f"s-{step}")[1] for r in (r1, r2)),
                                 15, f"serf event {step} at both rumors")
                await eventually(lambda: r1.store.list(f"r-{step}")[1] != [], 15,
                                 f"rumor event {step} at rumor1")
                await eventually(lambda: sum(1 for e, _ in received(tmp_path)
                                             if e == "consul:event:r-" + step) == 1 and
                                 len(received(tmp_path)) >= 2 * n, 15,
                                 f"rumor event {step} at serf1's handler")

            await events_flow("start")
            for args in (["-install", K2], ["-use", K2], ["-remove", K1]):
                res = await serf_keys(serf1, *args)
                assert res.returncode == 0, (args, res.stdout, res.stderr)
                await events_flow(args[0][1:] + "-from-serf")
            res = await serf_keys(serf1, "-list")
            assert res.returncode == 0, res.stdout + res.stderr
            assert serf_listed(res.stdout) == {K2: "4/4"}, res.stdout
            raw2 = base64.b64decode(K2)
            assert r1.node.keyring_keys() == r2.node.keyring_keys() == (raw2,)

            # and now from rumor: serf agents follow
            for op, key in (("install", K3), ("use", K3), ("remove", K2)):
                resp = await r1.keyring_operation(op, base64.b64decode(key))
                assert resp.error() is None and resp.num_resp == 4, (op, resp)
                await events_flow(op + "-from-rumor")
            res = await serf_keys(agents[1], "-list")
            assert serf_listed(res.stdout) == {K3: "4/4"}, res.stdout
            listed = await r2.keyring_operation("list")
            assert listed.keys == {K3: 4} and listed.primary_keys == {K3: 4}

        # rumor2 restarts with its original -encrypt=K1 flag: its data dir's keyring wins
        async with rumor_agent("rumor2", f"{net}.11", tmp_path / "r2") as r2:
            assert r2.node.keyring_keys() == (base64.b64decode(K3),)
            await r2.join([f"{net}.1:7946"])
            async def rejoined() -> bool:
                return await serf1.status_of("rumor2") == "alive" and \
                    {m.name for m in r2.node.members() if m.status == 1} \
                    >= {"serf1", "serf2", "rumor2"}
            await eventually(rejoined, 15, "restarted rumor2 rejoined")
            await serf1.event("after-restart", "z")
            await eventually(lambda: r2.store.list("after-restart")[1] != [], 15,
                             "serf event at the restarted rumor2")
