"""Join and leave of in-process agents: what a join replays (``Agent.start``/``Agent.join``
history policy) and how long a graceful leave waits.

A new agent (empty store) takes its peers' buffered events; a restarted agent (same
``data_dir``) keeps its list and stores only what it missed, even when its store had already
evicted older events whose IDs it can no longer dedupe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.agent.helpers import InProc, eventually, in_process_agent, random_subnet


async def fire(a: InProc, name: str) -> str:
    r = await a.client.put(f"/v1/event/fire/{name}", content=b"x")
    assert r.status_code == 200, r.text
    event_id: str = r.json()["ID"]
    return event_id


def stored(a: InProc) -> list[str]:
    return [e.id for e in a.agent.store]


async def test_fresh_agent_gets_history_restarted_one_replays_nothing(tmp_path: Path) -> None:
    net = random_subnet()
    keeper: dict[str, Any] = {"data_dir": str(tmp_path / "keeper"), "event_buffer": 4}
    async with in_process_agent(f"{net}.1", "src") as a:
        ids = [await fire(a, f"e{i}") for i in range(6)]
        async with in_process_agent(f"{net}.2", "keeper", **keeper) as b:
            with trio.fail_after(10):
                await b.agent.join([a.serf_addr])
            await eventually(lambda: stored(b) == ids[2:], "the newest 4 of the history")
            assert b.agent.metrics.events_stored == 6  # all 6 arrived, 2 were evicted
            with trio.fail_after(10):
                await b.agent.leave()
        missed = [await fire(a, "while-down") for _ in range(2)]

        async with in_process_agent(f"{net}.2", "keeper", **keeper) as b:
            assert stored(b) == ids[2:]  # the list survived the restart
            with trio.fail_after(10):
                await b.agent.join([a.serf_addr])
            await eventually(lambda: stored(b) == ids[4:] + missed, "only the missed events")
            # e0/e1 were evicted before the restart: ignored as too old, not stored again
            assert b.agent.metrics.events_stored == 2
            # the 4 it held were offered back to gossip at start (see test_durable_fire), so
            # the copies arriving with the push-pull are deduped there, not delivered again
            assert b.agent.metrics.events_deduped + b.agent.node.stats().events_deduped >= 4
            assert b.agent.node.stats().events_too_old >= 2


async def test_consul_style_join_ignores_history() -> None:
    net = random_subnet()
    async with in_process_agent(f"{net}.1", "src") as a, \
            in_process_agent(f"{net}.2", "consul-like") as b:
        await fire(a, "old")
        with trio.fail_after(10):
            await b.agent.join([a.serf_addr], ignore_old=True)
        new = await fire(a, "new")
        await eventually(lambda: stored(b) == [new], "the new event only")


async def test_lone_agent_leaves_at_once(autojump_clock: Any) -> None:
    """memberlist waits for the leave broadcast only when someone is alive to hear it."""
    async with in_process_agent(f"{random_subnet()}.1", "alone") as a:
        t0 = trio.current_time()
        await a.agent.leave()
        assert trio.current_time() - t0 < 0.5  # not the 5 s broadcast timeout
        assert a.agent.node._serf.left
